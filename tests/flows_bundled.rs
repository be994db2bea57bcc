//! The bundled flows in `flows/` load and validate cleanly, without warnings.

use std::path::Path;

#[test]
fn bundled_flows_are_valid() {
    match waotp::flow::load_dir(Path::new("flows")) {
        Ok(set) => {
            assert!(!set.is_empty());
            let warnings: Vec<String> = set
                .iter()
                .flat_map(|f| f.warnings())
                .map(ToString::to_string)
                .collect();
            assert!(warnings.is_empty(), "{}", warnings.join("\n"));
        }
        Err(waotp::flow::LoadError::Invalid(diags)) => {
            let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
            panic!("invalid bundled flows:\n{}", text.join("\n"));
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn customer_keywords_pick_the_right_flow() {
    let set = waotp::flow::load_dir(Path::new("flows")).expect("bundled flows load");
    let pick = |text: &str| set.flow_for_keyword(text).map(|f| f.id().to_string());
    assert_eq!(
        pick("I forgot my password").as_deref(),
        Some("account_recovery")
    );
    assert_eq!(pick("I'm locked out").as_deref(), Some("account_recovery"));
    assert_eq!(
        pick("can I talk to an agent?").as_deref(),
        Some("support_identity")
    );
    assert_eq!(pick("hello"), None);
    let cod = set.get("cod_confirmation").expect("bundled");
    assert!(cod.starts_by_api());
    assert_eq!(
        cod.required_vars().collect::<Vec<_>>(),
        ["customer_name", "order_id", "total"]
    );
}
