//! The flow file loader on arbitrary text (named without `.toml`, so any flow id may load): it
//! must never panic, and every diagnostic it gives must point at a line and column inside the
//! text (merchants jump to them in their editor).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match waotp::flow::parse_flow("fuzz", text) {
        Ok(flow) => assert!(!flow.hash().is_empty()),
        Err(diagnostics) => {
            assert!(!diagnostics.is_empty(), "refused without saying why");
            let lines = text.split('\n').count();
            for d in &diagnostics {
                assert!(
                    d.line >= 1 && d.line <= lines,
                    "{d:?} outside {lines} lines"
                );
                assert!(d.col >= 1, "{d:?}");
            }
        }
    }
});
