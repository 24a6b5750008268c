//! The frontend gatehouse serves beside its own routes: a built SPA from a directory (with the
//! SPA fallback to `index.html`, cache policy, content types and precompressed variants), or a
//! dev server passed through (see `routes::frontend`). Also the security headers every
//! response carries. Only file-system and header logic here; no framework types.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use percent_encoding::percent_decode_str;
use url::Url;

use crate::config::{FrontendSettings, FrontendSource};

/// Where the frontend comes from, as resolved at start-up.
#[derive(Debug, Clone)]
pub enum Frontend {
    /// The directory as configured. It is resolved again for every request (a deployment
    /// may swap a `current` symlink), and every file served must resolve inside it.
    Dir(PathBuf),
    DevServer(Url),
    /// The default `static/` is not there: nothing to serve (an API-only deployment).
    None,
}

impl Frontend {
    /// Resolves the configured directory. A configured directory that vanished since the
    /// config was checked is an error; a missing default directory is not.
    pub fn new(settings: &FrontendSettings) -> std::io::Result<Frontend> {
        match &settings.source {
            FrontendSource::DevServer(url) => Ok(Frontend::DevServer(url.clone())),
            FrontendSource::Dir { path, configured } => match std::fs::canonicalize(path) {
                Ok(root) if root.is_dir() => Ok(Frontend::Dir(path.clone())),
                Ok(_) | Err(_) if !configured => Ok(Frontend::None),
                Ok(root) => Err(std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    format!("frontend.dir {} is not a directory", root.display()),
                )),
                Err(e) => Err(e),
            },
        }
    }
}

/// The headers gatehouse adds to every response that does not set them itself.
pub fn security_headers(
    settings: &FrontendSettings,
    public_url: &Url,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("X-Content-Type-Options", "nosniff".to_owned()),
        ("Referrer-Policy", settings.referrer_policy.clone()),
    ];
    if let Some(csp) = &settings.content_security_policy {
        headers.push(("Content-Security-Policy", csp.clone()));
    }
    if public_url.scheme() == "https" {
        headers.push(("Strict-Transport-Security", "max-age=31536000".to_owned()));
    }
    headers
}

// ---------------------------------------------------------------------------------------
// Static files
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Brotli,
    Gzip,
}

impl Encoding {
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Gzip => "gz",
        }
    }
}

/// A file to send, with the headers that describe it.
#[derive(Debug, Clone)]
pub struct StaticFile {
    /// The bytes to send: the file itself or its precompressed variant.
    pub path: PathBuf,
    pub len: u64,
    pub content_type: &'static str,
    pub cache_control: &'static str,
    pub encoding: Option<Encoding>,
    pub etag: String,
}

impl StaticFile {
    /// `If-None-Match` (a list of entity tags, or `*`) names this representation.
    pub fn matches(&self, if_none_match: &str) -> bool {
        if_none_match
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == self.etag)
    }
}

/// What a request for `request_path` is answered with. `accept` and `accept_encoding` are
/// the request's headers. Blocking: call it off the async workers.
pub fn lookup(
    root: &Path,
    request_path: &str,
    accept: Option<&str>,
    accept_encoding: Option<&str>,
) -> Option<StaticFile> {
    let root = std::fs::canonicalize(root).ok()?;
    let encodings = acceptable_encodings(accept_encoding.unwrap_or(""));
    if let Some(file) = find(&root, request_path, &encodings) {
        return Some(file);
    }
    let last = request_path.rsplit('/').next().unwrap_or("");
    if accepts_html(accept.unwrap_or("")) && !looks_like_asset(last) {
        return find(&root, "/index.html", &encodings);
    }
    None
}

/// `root` is canonical.
fn find(root: &Path, request_path: &str, encodings: &[Encoding]) -> Option<StaticFile> {
    let decoded = percent_decode_str(request_path).decode_utf8().ok()?;
    let relative = decoded.strip_prefix('/')?;
    let mut candidate = root.to_path_buf();
    for segment in relative.split('/') {
        if segment.is_empty() {
            continue; // only a trailing slash can be empty here (the path guard saw to that)
        }
        // Dot files (.env, .git, …) are never part of a frontend build.
        if segment.starts_with('.') && segment != ".well-known" {
            return None;
        }
        if segment.contains(['\\', '\0']) {
            return None;
        }
        candidate.push(segment);
    }
    let mut real = inside(root, &candidate)?;
    if real.is_dir() {
        candidate.push("index.html");
        real = inside(root, &candidate)?;
    }
    let metadata = std::fs::metadata(&real).ok()?;
    if !metadata.is_file() {
        return None;
    }
    let name = candidate
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let content_type = content_type(&name);
    let cache_control = cache_control(&name);

    for encoding in encodings {
        let mut variant = candidate.clone().into_os_string();
        variant.push(".");
        variant.push(encoding.suffix());
        let Some(variant) = inside(root, Path::new(&variant)) else {
            continue;
        };
        let Ok(variant_metadata) = std::fs::metadata(&variant) else {
            continue;
        };
        if variant_metadata.is_file() {
            return Some(StaticFile {
                path: variant,
                len: variant_metadata.len(),
                content_type,
                cache_control,
                encoding: Some(*encoding),
                etag: etag(&variant_metadata, Some(*encoding)),
            });
        }
    }
    Some(StaticFile {
        path: real,
        len: metadata.len(),
        content_type,
        cache_control,
        encoding: None,
        etag: etag(&metadata, None),
    })
}

/// The canonical path, when it exists and lies inside `root` (a symlink may not lead out).
fn inside(root: &Path, path: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(path).ok()?;
    real.starts_with(root).then_some(real)
}

fn etag(metadata: &std::fs::Metadata, encoding: Option<Encoding>) -> String {
    let modified = metadata
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default();
    let suffix = encoding
        .map(|e| format!("-{}", e.suffix()))
        .unwrap_or_default();
    format!(
        "\"{:x}-{:x}.{:x}{suffix}\"",
        metadata.len(),
        modified.as_secs(),
        modified.subsec_nanos()
    )
}

/// Encodings the client accepts that we may have precompressed, best first. `q=0` refuses.
pub fn acceptable_encodings(accept_encoding: &str) -> Vec<Encoding> {
    let mut brotli = None;
    let mut gzip = None;
    let mut any = None;
    for item in accept_encoding.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").map(str::to_owned))
            .next()
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match coding.as_str() {
            "br" => brotli = Some(q),
            "gzip" | "x-gzip" => gzip = Some(q),
            "*" => any = Some(q),
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (encoding, q) in [(Encoding::Brotli, brotli), (Encoding::Gzip, gzip)] {
        if q.or(any).is_some_and(|q| q > 0.0) {
            out.push(encoding);
        }
    }
    out
}

/// Whether the client asks for an HTML page (a navigation) rather than some asset.
pub fn accepts_html(accept: &str) -> bool {
    accept.split(',').any(|item| {
        let mut parts = item.split(';');
        let kind = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        !refused
            && (kind.eq_ignore_ascii_case("text/html")
                || kind.eq_ignore_ascii_case("application/xhtml+xml"))
    })
}

/// A last path segment that names a file type we know (other than a page): a missing one
/// is a broken asset reference, which must 404 rather than get the HTML shell.
pub fn looks_like_asset(last_segment: &str) -> bool {
    match extension(last_segment) {
        Some(ext) => !matches!(ext.as_str(), "html" | "htm") && known_type(&ext).is_some(),
        None => false,
    }
}

fn extension(name: &str) -> Option<String> {
    let (stem, ext) = name.rsplit_once('.')?;
    (!stem.is_empty() && !ext.is_empty()).then(|| ext.to_ascii_lowercase())
}

fn known_type(ext: &str) -> Option<&'static str> {
    Some(match ext {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" | "cjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "csv" => "text/csv; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        _ => return None,
    })
}

/// The media type for a file name (of the file itself, not of a `.br`/`.gz` variant).
pub fn content_type(name: &str) -> &'static str {
    extension(name)
        .and_then(|ext| known_type(&ext))
        .unwrap_or("application/octet-stream")
}

pub const CACHE_HTML: &str = "no-cache";
pub const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
pub const CACHE_SHORT: &str = "public, max-age=60";

/// Pages revalidate every time (they name the current assets); fingerprinted assets never
/// change under their name; anything else gets a short cache.
pub fn cache_control(name: &str) -> &'static str {
    match extension(name).as_deref() {
        Some("html" | "htm") => CACHE_HTML,
        _ if is_fingerprinted(name) => CACHE_IMMUTABLE,
        _ => CACHE_SHORT,
    }
}

/// A file name with a content hash in it: `app.3f9a2c1b.js`, `index-4b1e9f0a.css`,
/// `chunk.B7x9kQ2m.js`. A part (split on `.` and `-`) of 8 to 64 letters, digits or `_`,
/// with at least one digit and one letter. Conservative on purpose: a false "no" costs a
/// revalidation, a false "yes" pins a changed file in caches for a year.
pub fn is_fingerprinted(name: &str) -> bool {
    let Some((stem, _ext)) = name.rsplit_once('.') else {
        return false;
    };
    stem.split(['.', '-']).skip(1).any(|part| {
        (8..=64).contains(&part.len())
            && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && part.bytes().any(|b| b.is_ascii_digit())
            && part.bytes().any(|b| b.is_ascii_alphabetic())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints() {
        for name in [
            "app.3f9a2c1b.js",
            "index-4b1e9f0a.css",
            "chunk.B7x9kQ2m.js",
            "vendor.0123456789abcdef0123.js",
            "main-Dk3a_9xZ.js",
        ] {
            assert!(is_fingerprinted(name), "{name}");
        }
        for name in [
            "app.js",
            "index.html",
            "3f9a2c1b.js",
            "logo.png",
            "release-20240101.js",
            "MyComponent-Button.js",
            "app.abcdefgh.js",
            "jquery-3.7.1.min.js",
        ] {
            assert!(!is_fingerprinted(name), "{name}");
        }
    }

    #[test]
    fn cache_policy() {
        assert_eq!(cache_control("index.html"), CACHE_HTML);
        assert_eq!(cache_control("app.3f9a2c1b.js"), CACHE_IMMUTABLE);
        assert_eq!(cache_control("favicon.svg"), CACHE_SHORT);
    }

    #[test]
    fn encodings_are_negotiated() {
        use Encoding::*;
        assert_eq!(
            acceptable_encodings("gzip, deflate, br, zstd"),
            vec![Brotli, Gzip]
        );
        assert_eq!(acceptable_encodings("gzip"), vec![Gzip]);
        assert_eq!(acceptable_encodings("br;q=0, gzip;q=0.5"), vec![Gzip]);
        assert_eq!(acceptable_encodings("*"), vec![Brotli, Gzip]);
        assert_eq!(acceptable_encodings("*;q=0, gzip"), vec![Gzip]);
        assert_eq!(acceptable_encodings("identity"), vec![]);
        assert_eq!(acceptable_encodings(""), vec![]);
    }

    #[test]
    fn navigations_and_assets() {
        assert!(accepts_html(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        assert!(!accepts_html("*/*"));
        assert!(!accepts_html("image/avif,image/webp,*/*;q=0.8"));
        assert!(!accepts_html("text/html;q=0, */*"));
        assert!(looks_like_asset("app.js"));
        assert!(looks_like_asset("logo.PNG"));
        assert!(!looks_like_asset("orders"));
        assert!(!looks_like_asset("john.doe"));
        assert!(!looks_like_asset("about.html"));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type("index.html"), "text/html; charset=utf-8");
        assert_eq!(
            content_type("app.3f9a2c1b.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("x.wasm"), "application/wasm");
        assert_eq!(content_type("README"), "application/octet-stream");
        assert_eq!(content_type(".hidden"), "application/octet-stream");
    }

    #[test]
    fn entity_tags() {
        let file = StaticFile {
            path: PathBuf::new(),
            len: 1,
            content_type: "text/plain",
            cache_control: CACHE_SHORT,
            encoding: None,
            etag: "\"1-2\"".into(),
        };
        assert!(file.matches("\"1-2\""));
        assert!(file.matches("W/\"1-2\""));
        assert!(file.matches("\"0-0\", \"1-2\""));
        assert!(file.matches("*"));
        assert!(!file.matches("\"1-3\""));
    }
}
