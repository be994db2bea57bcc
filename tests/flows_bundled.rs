//! The bundled flows in `flows/` load and validate cleanly.

use std::path::Path;

#[test]
fn bundled_flows_are_valid() {
    match waotp::flow::load_dir(Path::new("flows")) {
        Ok(set) => assert!(!set.is_empty()),
        Err(waotp::flow::LoadError::Invalid(diags)) => {
            let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
            panic!("invalid bundled flows:\n{}", text.join("\n"));
        }
        Err(e) => panic!("{e}"),
    }
}
