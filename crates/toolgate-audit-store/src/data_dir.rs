//! Where toolgate keeps its state when no `--data-dir` is given.

use std::ffi::OsString;
use std::path::PathBuf;

/// `$TOOLGATE_DATA_DIR`, else `$XDG_DATA_HOME/toolgate`, else
/// `$HOME/.local/share/toolgate`, else `.toolgate` in the current directory.
pub fn default_data_dir() -> PathBuf {
    data_dir_from(|name| std::env::var_os(name))
}

/// [`default_data_dir`] with the environment passed in. Empty values count as
/// unset, and so does a relative `XDG_DATA_HOME` (the XDG spec says to ignore it).
pub fn data_dir_from(env: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let get = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = get("TOOLGATE_DATA_DIR") {
        return dir;
    }
    if let Some(xdg) = get("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return xdg.join("toolgate");
    }
    if let Some(home) = get("HOME") {
        return home.join(".local").join("share").join("toolgate");
    }
    PathBuf::from(".toolgate")
}

#[cfg(test)]
mod tests {
    use super::data_dir_from;
    use std::path::PathBuf;

    fn check(env: &[(&str, &str)], expected: &str) {
        let dir = data_dir_from(|name| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).into())
        });
        assert_eq!(dir, PathBuf::from(expected), "env {env:?}");
    }

    #[test]
    fn the_first_variable_set_wins() {
        check(
            &[
                ("TOOLGATE_DATA_DIR", "/srv/tg"),
                ("XDG_DATA_HOME", "/x"),
                ("HOME", "/h"),
            ],
            "/srv/tg",
        );
        check(&[("XDG_DATA_HOME", "/x"), ("HOME", "/h")], "/x/toolgate");
        check(&[("HOME", "/h")], "/h/.local/share/toolgate");
        check(&[], ".toolgate");
    }

    #[test]
    fn empty_and_relative_values_are_ignored() {
        check(
            &[
                ("TOOLGATE_DATA_DIR", ""),
                ("XDG_DATA_HOME", "rel"),
                ("HOME", "/h"),
            ],
            "/h/.local/share/toolgate",
        );
        check(
            &[("XDG_DATA_HOME", ""), ("HOME", "/h")],
            "/h/.local/share/toolgate",
        );
    }
}
