//! Debian's `chromium` in headless mode: a screenshot of a local HTML file, or its DOM after
//! rendering. A throwaway profile, and nothing that reaches the network on its own.

use std::path::Path;
use std::time::Duration;

use super::process::{Output, TempDir, find_tool, run};

/// Runs `chromium --headless … <extra> file://<html>`; its output, or why it failed.
fn chromium(html: &Path, extra: &[&str]) -> Result<Output, String> {
    let bin = find_tool("CHROMIUM_BIN", "chromium");
    let profile = TempDir::new("chromium-profile");
    let profile_arg = format!("--user-data-dir={}", profile.path().display());
    let url = format!("file://{}", html.display());
    let mut args = vec![
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        &profile_arg,
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    let out = run(&bin, &args, &[], Duration::from_secs(120));
    match out.code {
        Some(0) => Ok(out),
        code => Err(format!(
            "chromium exited with {code:?}:\n{}",
            super::process::tail(&out.stderr, 20)
        )),
    }
}

/// Renders `html` in a `width`×`height` window and writes a PNG screenshot to `png`.
pub fn screenshot(html: &Path, png: &Path, width: u32, height: u32) -> Result<(), String> {
    let shot = format!("--screenshot={}", png.display());
    let size = format!("--window-size={width},{height}");
    chromium(html, &[&shot, &size])?;
    if png.is_file() {
        Ok(())
    } else {
        Err(format!("chromium wrote no {}", png.display()))
    }
}

/// The DOM of `html` after rendering, serialized.
pub fn dump_dom(html: &Path) -> Result<String, String> {
    chromium(html, &["--dump-dom"]).map(|out| out.stdout)
}
