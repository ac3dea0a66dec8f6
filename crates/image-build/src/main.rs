//! `image-build`: assembles Keelson images from Debian packages and our
//! binaries (rootfs squashfs, initramfs, GPT raw disk image).

fn main() {}
