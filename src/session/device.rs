//! A coarse device label ("Firefox on Windows") from the User-Agent a session logged in
//! with, for the user's list of their sessions. Only the label is kept, never the header:
//! the label comes from a small closed vocabulary, so nothing a client sends is stored as is.

/// What a session with no (or an unrecognised) User-Agent is listed as.
pub const UNKNOWN_DEVICE: &str = "Unknown device";

/// Browser and platform, as far as the User-Agent says them plainly.
pub fn device_label(user_agent: Option<&str>) -> String {
    let Some(ua) = user_agent.filter(|ua| !ua.trim().is_empty()) else {
        return UNKNOWN_DEVICE.to_owned();
    };
    match (browser(ua), platform(ua)) {
        (Some(browser), Some(platform)) => format!("{browser} on {platform}"),
        (Some(browser), None) => browser.to_owned(),
        (None, Some(platform)) => format!("Browser on {platform}"),
        (None, None) => UNKNOWN_DEVICE.to_owned(),
    }
}

/// Order matters: Edge and Opera also say Chrome, Chrome also says Safari.
fn browser(ua: &str) -> Option<&'static str> {
    const BROWSERS: &[(&str, &str)] = &[
        ("Edg/", "Edge"),
        ("EdgA/", "Edge"),
        ("EdgiOS/", "Edge"),
        ("OPR/", "Opera"),
        ("SamsungBrowser/", "Samsung Internet"),
        ("Firefox/", "Firefox"),
        ("FxiOS/", "Firefox"),
        ("CriOS/", "Chrome"),
        ("Chromium/", "Chromium"),
        ("Chrome/", "Chrome"),
        ("Safari/", "Safari"),
    ];
    BROWSERS
        .iter()
        .find(|(marker, _)| ua.contains(marker))
        .map(|(_, name)| *name)
        // A Safari marker without `Version/` is some embedded web view, not Safari itself.
        .filter(|name| *name != "Safari" || ua.contains("Version/"))
}

/// Order matters: iPhones say "like Mac OS X", Android says Linux.
fn platform(ua: &str) -> Option<&'static str> {
    const PLATFORMS: &[(&str, &str)] = &[
        ("iPhone", "iPhone"),
        ("iPad", "iPad"),
        ("iPod", "iPod"),
        ("Android", "Android"),
        ("CrOS", "ChromeOS"),
        ("Windows", "Windows"),
        ("Macintosh", "macOS"),
        ("Mac OS X", "macOS"),
        ("Linux", "Linux"),
        ("X11", "Linux"),
    ];
    PLATFORMS
        .iter()
        .find(|(marker, _)| ua.contains(marker))
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_user_agents_get_a_coarse_label() {
        let cases = [
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                 Chrome/131.0.0.0 Safari/537.36",
                "Chrome on Linux",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
                "Firefox on Windows",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 \
                 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
                "Safari on iPhone",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 \
                 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
                "Safari on macOS",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like \
                 Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
                "Edge on Windows",
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like \
                 Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
                "Chrome on Android",
            ),
            (
                "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, \
                 like Gecko) CriOS/131.0 Mobile/15E148 Safari/604.1",
                "Chrome on iPad",
            ),
            ("curl/8.5.0", UNKNOWN_DEVICE),
            ("", UNKNOWN_DEVICE),
        ];
        for (ua, label) in cases {
            assert_eq!(device_label(Some(ua)), label, "{ua}");
        }
        assert_eq!(device_label(None), UNKNOWN_DEVICE);
    }

    #[test]
    fn nothing_of_the_header_itself_is_kept() {
        let label = device_label(Some("Mozilla/5.0 (Linux; secret-build-42) Firefox/1.0"));
        assert_eq!(label, "Firefox on Linux");
        assert!(!label.contains("secret"));
    }
}
