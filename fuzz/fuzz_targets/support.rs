//! What is the fuzz targets' own: how an input picks its `--max-frame`. The
//! allocator and the SPEC §3 reference they judge the decoder by are
//! `ipc_faults::oracle`, shared with the property test.

/// The `--max-frame` a fuzz input asks for with its first byte.
pub fn max_frame(selector: u8) -> u32 {
    match selector % 6 {
        0 => 0,
        1 => u32::from(selector),
        2 => 4096,
        3 => 20_000,
        4 => 70_000,
        _ => 16 << 20,
    }
}
