//! Keelson upgrade bundles: a signed manifest followed by the payloads of
//! one A/B slot (kernel, initramfs, root squashfs).
