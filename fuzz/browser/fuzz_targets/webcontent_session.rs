#![no_main]
//! A live UI ↔ WebContent connection, the WebContent process the victim:
//! navigations and the shutdown call from the UI process.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz_browser::web_content().fuzz_session(data));
