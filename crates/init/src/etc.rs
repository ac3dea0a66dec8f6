//! The `/etc` tmpfs: filled at boot from the image's static tree
//! (`/usr/lib/keelson/etc/`) before the config's files are rendered over it.

use std::path::Path;

/// Copies the tree `from` into `to` (directories, regular files with their
/// permission bits, symlinks). Returns how many files and links were copied.
pub fn copy_tree(from: &Path, to: &Path) -> std::io::Result<usize> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to)?;
    let mut copied = 0;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let src = e.path();
        let dst = to.join(e.file_name());
        let md = std::fs::symlink_metadata(&src)?;
        let ft = md.file_type();
        if ft.is_dir() {
            copied += copy_tree(&src, &dst)?;
            std::fs::set_permissions(
                &dst,
                std::fs::Permissions::from_mode(md.permissions().mode()),
            )?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&src)?;
            let _ = std::fs::remove_file(&dst);
            std::os::unix::fs::symlink(target, &dst)?;
            copied += 1;
        } else if ft.is_file() {
            std::fs::copy(&src, &dst)?;
            copied += 1;
        }
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn static_etc_is_copied_with_modes_and_links() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("usr/lib/keelson/etc");
        std::fs::create_dir_all(src.join("ssl/certs")).unwrap();
        std::fs::write(src.join("passwd"), "root:x:0:0::/:/bin/false\n").unwrap();
        std::fs::write(src.join("shadow"), "root:*::::::\n").unwrap();
        std::fs::set_permissions(src.join("shadow"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        std::fs::write(src.join("ssl/certs/ca-certificates.crt"), "PEM").unwrap();
        std::os::unix::fs::symlink("/run/resolv.conf", src.join("resolv.conf")).unwrap();

        let etc = t.path().join("etc");
        assert_eq!(copy_tree(&src, &etc).unwrap(), 4);
        assert_eq!(
            std::fs::read_to_string(etc.join("passwd")).unwrap(),
            "root:x:0:0::/:/bin/false\n"
        );
        assert_eq!(
            std::fs::metadata(etc.join("shadow"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read_to_string(etc.join("ssl/certs/ca-certificates.crt")).unwrap(),
            "PEM"
        );
        assert_eq!(
            std::fs::read_link(etc.join("resolv.conf")).unwrap(),
            Path::new("/run/resolv.conf")
        );
        // Copying again (a restart of stage 2 logic) overwrites cleanly.
        assert_eq!(copy_tree(&src, &etc).unwrap(), 4);
        assert!(copy_tree(&t.path().join("missing"), &etc).is_err());
    }
}
