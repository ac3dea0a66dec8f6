//! Host tools the build shells out to: finding them (with an error that names
//! the Debian package to install) and running them (with an error that shows
//! the command line and its stderr).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A host program the build needs, and the Debian package that provides it.
#[derive(Clone, Copy, Debug)]
pub struct Tool {
    /// Executable name looked up on PATH (and the sbin directories).
    pub name: &'static str,
    /// Debian package that installs it.
    pub package: &'static str,
}

/// Errors from finding or running host tools.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The tool is not installed.
    #[error("{tool} not found: install {package} (make deps)")]
    Missing {
        /// Executable name.
        tool: &'static str,
        /// Debian package providing it.
        package: &'static str,
    },
    /// The tool could not be started.
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The tool ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Exit status.
        status: std::process::ExitStatus,
        /// Last part of its stderr.
        stderr: String,
    },
}

impl Tool {
    /// Declares a tool and its package.
    pub const fn new(name: &'static str, package: &'static str) -> Self {
        Tool { name, package }
    }

    /// Full path of the tool, or [`ToolError::Missing`].
    pub fn path(&self) -> Result<PathBuf, ToolError> {
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&path_var).collect();
        for extra in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
            dirs.push(PathBuf::from(extra));
        }
        dirs.into_iter()
            .map(|d| d.join(self.name))
            .find(|p| is_executable(p))
            .ok_or(ToolError::Missing {
                tool: self.name,
                package: self.package,
            })
    }

    /// A [`Command`] for this tool, or [`ToolError::Missing`].
    pub fn command(&self) -> Result<Command, ToolError> {
        Ok(Command::new(self.path()?))
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Renders a command line for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&shell_word(a));
    }
    s
}

fn shell_word(a: &OsStr) -> String {
    let s = a.to_string_lossy();
    if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
        format!("'{}'", s.replace('\'', "'\\''"))
    } else {
        s.into_owned()
    }
}

/// Runs a command to completion, capturing its output; a non-zero exit is
/// [`ToolError::Failed`] with the tail of stderr.
pub fn run(cmd: &mut Command) -> Result<Output, ToolError> {
    let command = describe(cmd);
    tracing::debug!(%command, "running");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ToolError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(ToolError::Failed {
            command,
            status: out.status,
            stderr: tail(&out.stderr, 2000),
        });
    }
    Ok(out)
}

/// Runs a command with its stdout and stderr passed through to our stderr
/// (for long builds whose progress the user should see).
pub fn run_streaming(cmd: &mut Command) -> Result<(), ToolError> {
    let command = describe(cmd);
    tracing::debug!(%command, "running");
    let stderr_copy = std::os::fd::AsFd::as_fd(&std::io::stderr())
        .try_clone_to_owned()
        .map_err(|source| ToolError::Spawn {
            command: command.clone(),
            source,
        })?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr_copy))
        .status()
        .map_err(|source| ToolError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !status.success() {
        return Err(ToolError::Failed {
            command,
            status,
            stderr: "(see the output above)".into(),
        });
    }
    Ok(())
}

fn tail(bytes: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    let s = s.trim();
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

/// Tools used by the disk build, checked up front so a missing one fails
/// before any long step.
pub mod known {
    use super::Tool;
    /// apt-get (download of .debs and sources).
    pub const APT_GET: Tool = Tool::new("apt-get", "apt");
    /// apt-cache (version pinning).
    pub const APT_CACHE: Tool = Tool::new("apt-cache", "apt");
    /// dpkg-deb (unpacking .debs).
    pub const DPKG_DEB: Tool = Tool::new("dpkg-deb", "dpkg");
    /// depmod (modules.dep).
    pub const DEPMOD: Tool = Tool::new("depmod", "kmod");
    /// mksquashfs.
    pub const MKSQUASHFS: Tool = Tool::new("mksquashfs", "squashfs-tools");
    /// mkfs.vfat.
    pub const MKFS_VFAT: Tool = Tool::new("mkfs.vfat", "dosfstools");
    /// mtools' mcopy.
    pub const MCOPY: Tool = Tool::new("mcopy", "mtools");
    /// mtools' mmd.
    pub const MMD: Tool = Tool::new("mmd", "mtools");
    /// grub-mkimage.
    pub const GRUB_MKIMAGE: Tool = Tool::new("grub-mkimage", "grub-common");
    /// xorriso (the ISO).
    pub const XORRISO: Tool = Tool::new("xorriso", "xorriso");
    /// grub-editenv.
    pub const GRUB_EDITENV: Tool = Tool::new("grub-editenv", "grub-common");
    /// mkfs.ext4.
    pub const MKFS_EXT4: Tool = Tool::new("mkfs.ext4", "e2fsprogs");
    /// debugfs (writing files into STATE deterministically).
    pub const DEBUGFS: Tool = Tool::new("debugfs", "e2fsprogs");
    /// gcc (the pause program).
    pub const GCC: Tool = Tool::new("gcc", "gcc");
    /// tar (unpacking the Kubernetes source).
    pub const TAR: Tool = Tool::new("tar", "tar");
    /// make (the Kubernetes build).
    pub const MAKE: Tool = Tool::new("make", "make");
    /// go (the Kubernetes build).
    pub const GO: Tool = Tool::new("go", "golang-go");
    /// rsync (the Kubernetes build scripts need it).
    pub const RSYNC: Tool = Tool::new("rsync", "rsync");
}
