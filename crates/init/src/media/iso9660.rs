//! Just enough ISO 9660 to recognise boot media without mounting: the
//! primary volume descriptor's volume id.

/// Byte offset of the first volume descriptor (sector 16 of 2048 bytes).
pub const PVD_OFFSET: u64 = 16 * 2048;
/// Bytes to read at [`PVD_OFFSET`] for [`volume_id`].
pub const PVD_LEN: usize = 2048;

/// The volume id of a primary volume descriptor (`buf` read at
/// [`PVD_OFFSET`]), trailing spaces removed; `None` when `buf` is not one.
pub fn volume_id(buf: &[u8]) -> Option<String> {
    if buf.len() < 72 || buf[0] != 1 || &buf[1..6] != b"CD001" || buf[6] != 1 {
        return None;
    }
    let id = std::str::from_utf8(&buf[40..72]).ok()?;
    Some(id.trim_end_matches([' ', '\0']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pvd(id: &str) -> Vec<u8> {
        let mut b = vec![0u8; PVD_LEN];
        b[0] = 1;
        b[1..6].copy_from_slice(b"CD001");
        b[6] = 1;
        b[40..72].fill(b' ');
        b[40..40 + id.len()].copy_from_slice(id.as_bytes());
        b
    }

    #[test]
    fn reads_the_volume_id_and_ignores_anything_else() {
        assert_eq!(
            volume_id(&pvd("KEELSON_0_1_0")).as_deref(),
            Some("KEELSON_0_1_0")
        );
        let mut not_primary = pvd("X");
        not_primary[0] = 2;
        assert_eq!(volume_id(&not_primary), None);
        assert_eq!(volume_id(&[0u8; PVD_LEN]), None);
        assert_eq!(volume_id(b"short"), None);
    }
}
