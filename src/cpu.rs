//! What the CPU is, from `/proc/cpuinfo` (Linux; nothing elsewhere): its
//! model name, printed beside every measured figure, and its feature
//! flags, which pick the bf16 and int8 paths. At the bottom of the
//! layering: it imports nothing of fer, so any module may ask.

/// The CPU's model name, or the architecture where there is none.
pub fn model() -> String {
    info("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Whether the CPU lists every one of `names` among its flags (false where
/// there is no `/proc/cpuinfo`).
pub fn flags(names: &[&str]) -> bool {
    info("flags").is_some_and(|f| {
        let flags: Vec<&str> = f.split_whitespace().collect();
        names.iter().all(|n| flags.contains(n))
    })
}

/// The first `field` of `/proc/cpuinfo`.
pub fn info(field: &str) -> Option<String> {
    std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
        t.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == field))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    })
}
