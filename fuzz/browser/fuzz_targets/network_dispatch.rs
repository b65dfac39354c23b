#![no_main]
//! A hostile WebContent process's frames and attachments into the Network
//! process's `NetworkConnection`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_fuzz_browser::network().fuzz_dispatch(data));
