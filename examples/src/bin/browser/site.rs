//! The embedded site, the "Ferry Gazette": five pages with their style sheet,
//! scripts, SVGs (text compiled into the binary), and images and a JSON
//! archive generated at startup from a fixed seed, so every process of the
//! demo holds the same bytes without a large file in the repository.
//!
//! The Network process serves from it; the WebContent process checks every
//! body it receives against it (length and [`BodyHash`]).

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Where the site lives; every URL starts with it.
pub const ORIGIN: &str = "ferry://gazette";

/// The pages, in the order a WebContent process's navigations cycle
/// through them (each process starts at a different one).
pub const PAGES: [&str; 5] = [
    "/index.html",
    "/news.html",
    "/gallery.html",
    "/article.html",
    "/about.html",
];

/// The signed-in tab's account inbox: the Network process serves it to one
/// WebContent process only (the UI process says which).
pub const INBOX: &str = "/account/inbox.json";

/// The seed of every generated resource.
const SEED: u64 = 0x6665_7272_795f_6761;

/// One resource of the site.
pub struct Resource {
    /// Its MIME type.
    pub mime: &'static str,
    /// Its bytes.
    pub body: Vec<u8>,
    /// [`BodyHash`] of `body`.
    pub hash: u64,
}

/// The whole site, by path.
pub struct Site {
    resources: BTreeMap<&'static str, Resource>,
}

/// The site, built once per process (about 3.5 MiB, a few milliseconds).
pub fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(Site::build)
}

/// The absolute URL of a path of the site.
pub fn url(path: &str) -> String {
    format!("{ORIGIN}{path}")
}

impl Site {
    fn build() -> Site {
        let text: [(&'static str, &'static str); 11] = [
            ("/index.html", include_str!("site/index.html")),
            ("/news.html", include_str!("site/news.html")),
            ("/gallery.html", include_str!("site/gallery.html")),
            ("/article.html", include_str!("site/article.html")),
            ("/about.html", include_str!("site/about.html")),
            ("/style.css", include_str!("site/style.css")),
            ("/app.js", include_str!("site/app.js")),
            ("/news.js", include_str!("site/news.js")),
            ("/gallery.js", include_str!("site/gallery.js")),
            ("/logo.svg", include_str!("site/logo.svg")),
            ("/images/diagram.svg", include_str!("site/diagram.svg")),
        ];
        let mut resources = BTreeMap::new();
        let mut add = |path: &'static str, body: Vec<u8>| {
            let resource = Resource {
                mime: mime_type(path),
                hash: BodyHash::of(&body),
                body,
            };
            resources.insert(path, resource);
        };
        for (path, body) in text {
            add(path, body.as_bytes().to_vec());
        }
        add("/images/aurora.bmp", bitmap(1024, 1024, SEED));
        for (i, path) in [
            "/images/thumb-1.bmp",
            "/images/thumb-2.bmp",
            "/images/thumb-3.bmp",
            "/images/thumb-4.bmp",
        ]
        .into_iter()
        .enumerate()
        {
            add(path, bitmap(64, 64, SEED ^ (i as u64 + 1)));
        }
        add("/data/archive.json", archive(SEED, 256 * 1024));
        add(INBOX, archive(SEED ^ 0x1b0c, 4 * 1024));
        Site { resources }
    }

    /// The resource at `url`, if the site has it.
    pub fn get(&self, url: &str) -> Option<&Resource> {
        self.resources.get(url.strip_prefix(ORIGIN)?)
    }

    /// How many resources, and their total size.
    pub fn size(&self) -> (usize, usize) {
        let bytes = self.resources.values().map(|r| r.body.len()).sum();
        (self.resources.len(), bytes)
    }

    /// The largest resource's path and size.
    pub fn largest(&self) -> (&'static str, usize) {
        self.resources
            .iter()
            .map(|(path, r)| (*path, r.body.len()))
            .max_by_key(|(_, len)| *len)
            .unwrap_or(("", 0))
    }
}

fn mime_type(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("svg") => "image/svg+xml",
        Some("bmp") => "image/bmp",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// A streaming 64-bit hash of a body, fed in chunks of any size (the same
/// bytes give the same hash however they are split). Not cryptographic: it
/// catches a lost, duplicated, reordered or corrupted chunk.
#[derive(Debug, Clone)]
pub struct BodyHash {
    state: u64,
    pending: [u8; 8],
    pending_len: usize,
    len: u64,
}

impl Default for BodyHash {
    fn default() -> Self {
        BodyHash {
            state: 0x243f_6a88_85a3_08d3,
            pending: [0; 8],
            pending_len: 0,
            len: 0,
        }
    }
}

impl BodyHash {
    /// The hash of `bytes` in one go.
    pub fn of(bytes: &[u8]) -> u64 {
        let mut hash = BodyHash::default();
        hash.update(bytes);
        hash.finish()
    }

    fn mix(&mut self, word: u64) {
        self.state = (self.state ^ word)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }

    /// Feeds the next bytes.
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if self.pending_len > 0 {
            let take = (8 - self.pending_len).min(bytes.len());
            self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&bytes[..take]);
            self.pending_len += take;
            bytes = &bytes[take..];
            if self.pending_len < 8 {
                return;
            }
            self.mix(u64::from_le_bytes(self.pending));
            self.pending_len = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.mix(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        let rest = words.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.pending_len = rest.len();
    }

    /// Bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The hash of everything fed.
    pub fn finish(&self) -> u64 {
        let mut hash = self.clone();
        let mut last = [0u8; 8];
        last[..hash.pending_len].copy_from_slice(&hash.pending[..hash.pending_len]);
        hash.mix(u64::from_le_bytes(last));
        hash.mix(hash.len);
        let mut x = hash.state;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }
}

/// splitmix64: the generator of every generated byte.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 24-bit BMP of an aurora-like gradient with a little noise.
fn bitmap(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let row = (width * 3).next_multiple_of(4);
    let pixels = row * height;
    let mut out = Vec::with_capacity(54 + pixels as usize);
    out.extend_from_slice(b"BM");
    out.extend_from_slice(&(54 + pixels).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&54u32.to_le_bytes());
    out.extend_from_slice(&40u32.to_le_bytes());
    out.extend_from_slice(&width.to_le_bytes());
    out.extend_from_slice(&height.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&24u16.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&pixels.to_le_bytes());
    out.extend_from_slice(&2835u32.to_le_bytes());
    out.extend_from_slice(&2835u32.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    let mut rng = seed;
    let phase = (splitmix(&mut rng) % 512) as i64;
    for y in 0..height as i64 {
        let sky = 20 + (y * 60 / height as i64);
        for x in 0..width as i64 {
            // A wavy band: its height follows a triangle wave along x.
            let wave = ((x * 2 + phase) % 512 - 256).abs() * height as i64 / 1024;
            let distance = (y - height as i64 / 3 - wave).abs();
            let glow = (255 - distance * 512 / height as i64).max(0);
            let noise = (splitmix(&mut rng) & 0x0f) as i64;
            let b = (sky + glow / 4 + noise).min(255) as u8;
            let g = (sky / 2 + glow + noise).min(255) as u8;
            let r = (sky / 3 + glow / 6 + noise).min(255) as u8;
            out.extend_from_slice(&[b, g, r]);
        }
        out.resize(out.len().next_multiple_of(4), 0);
    }
    out
}

/// A JSON news archive of about `size` bytes.
fn archive(seed: u64, size: usize) -> Vec<u8> {
    const SUBJECTS: [&str; 8] = [
        "Broker",
        "Network process",
        "Ring buffer",
        "Futex",
        "Sealed memfd",
        "GPU process",
        "WebContent process",
        "Cookie jar",
    ];
    const VERBS: [&str; 8] = [
        "outpaces",
        "introduces",
        "survives",
        "refuses",
        "wakes",
        "maps",
        "forwards",
        "outlives",
    ];
    const OBJECTS: [&str; 8] = [
        "a hostile peer",
        "its own shadow",
        "three mebibytes",
        "the kernel",
        "a sleeping consumer",
        "every cookie",
        "the policy",
        "a crashed tab",
    ];
    let mut rng = seed;
    let mut out = String::with_capacity(size + 256);
    out.push_str("{\"stories\":[");
    let mut id = 0u64;
    while out.len() < size {
        id += 1;
        let mut pick = |list: &[&'static str; 8]| list[(splitmix(&mut rng) % 8) as usize];
        let headline = format!("{} {} {}", pick(&SUBJECTS), pick(&VERBS), pick(&OBJECTS));
        let words = 200 + splitmix(&mut rng) % 1800;
        if id > 1 {
            out.push(',');
        }
        out.push_str(&format!(
            "{{\"id\":{id},\"headline\":\"{headline}\",\"words\":{words},\"summary\":\"{headline}, sources say; more at eleven.\"}}"
        ));
    }
    out.push_str("]}");
    out.into_bytes()
}

/// The text of the first `<title>` element.
pub fn title(html: &str) -> Option<&str> {
    let start = html.find("<title>")? + "<title>".len();
    let end = html[start..].find("</title>")?;
    Some(html[start..start + end].trim())
}

/// The URLs of the subresources a page needs (style sheets, icons,
/// preloads, scripts, images), absolute, in document order, without
/// duplicates. Anchors are navigations, not subresources.
pub fn subresources(html: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for tag in html.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap_or("");
        let name = tag.split_whitespace().next().unwrap_or("");
        let attribute = match name {
            "link" => "href=\"",
            "script" | "img" => "src=\"",
            _ => continue,
        };
        let Some(start) = tag.find(attribute).map(|i| i + attribute.len()) else {
            continue;
        };
        let Some(len) = tag[start..].find('"') else {
            continue;
        };
        let path = &tag[start..start + len];
        let absolute = if path.starts_with('/') {
            url(path)
        } else {
            path.to_owned()
        };
        if !found.contains(&absolute) {
            found.push(absolute);
        }
    }
    found
}

/// The cookies a script sets with a literal `document.cookie = "..."`
/// assignment (the part before the first `;`).
pub fn cookie_writes(script: &str) -> Vec<String> {
    const WRITE: &str = "document.cookie = \"";
    let mut writes = Vec::new();
    let mut rest = script;
    while let Some(i) = rest.find(WRITE) {
        rest = &rest[i + WRITE.len()..];
        let literal = rest.split('"').next().unwrap_or("");
        let cookie = literal.split(';').next().unwrap_or("").trim();
        if !cookie.is_empty() {
            writes.push(cookie.to_owned());
        }
    }
    writes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_in_chunks_matches_hashing_at_once() {
        let body = archive(7, 10_000);
        let whole = BodyHash::of(&body);
        for chunk in [1, 3, 7, 8, 9, 1000, 16 * 1024] {
            let mut hash = BodyHash::default();
            for piece in body.chunks(chunk) {
                hash.update(piece);
            }
            assert_eq!(hash.finish(), whole, "chunks of {chunk}");
            assert_eq!(hash.len(), body.len() as u64);
        }
        let mut changed = body.clone();
        changed[5000] ^= 1;
        assert_ne!(BodyHash::of(&changed), whole);
        assert_ne!(BodyHash::of(&body[..9999]), whole);
    }

    #[test]
    fn every_page_and_subresource_is_consistent() {
        let site = site();
        for page in PAGES {
            let html = std::str::from_utf8(&site.get(&url(page)).unwrap().body).unwrap();
            assert!(title(html).unwrap().starts_with("Ferry Gazette"));
            for resource in subresources(html) {
                // The favicon is missing on purpose: a 404 to handle.
                assert!(
                    site.get(&resource).is_some() || resource.ends_with("/favicon.ico"),
                    "{page} needs {resource}"
                );
            }
        }
        let gallery = std::str::from_utf8(&site.get(&url("/gallery.html")).unwrap().body).unwrap();
        assert!(subresources(gallery).contains(&url("/images/aurora.bmp")));
        let (path, len) = site.largest();
        assert_eq!(path, "/images/aurora.bmp");
        assert!(len > 3 << 20);
        assert_eq!(
            cookie_writes(include_str!("site/app.js")),
            ["theme=sepia", "consent=essential-only"]
        );
    }
}
