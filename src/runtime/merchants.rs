//! What the runtime keeps per merchant: its flows (watched and reloaded like a single
//! merchant's), the values of its flows' `{WAOTP_HOOK_BASE_URL}` and `{WAOTP_CALLBACK_URL}`, its
//! callback URL and its OTP limits (the service-wide ones with the merchant's overrides).
//!
//! Built from the tenants registry at start and rebuilt by [`MerchantRuntimes::rebuilt`] when
//! the registry changes: a merchant whose flow source and URLs did not change keeps its loaded
//! flows (and the versions its live sessions run on); one whose new flows do not load keeps
//! the old ones. A merchant that is gone is kept aside, retired: its sessions (which get no new
//! customer messages, its numbers being gone too) run on its own flows and OTP limits until they
//! end or expire — never on another merchant's — without a callback URL (its entries are not
//! sent: the outbox knows no merchant of that id). Owns no state that must survive a
//! restart: everything here is read again from the tenants registry and the flow files.

use super::flows::{FlowRegistry, UrlNames};
use crate::otp::OtpPolicy;
use crate::tenants::{Merchant, Tenants};
use std::collections::HashMap;
use std::sync::Arc;

/// One merchant's runtime settings.
#[derive(Debug)]
pub struct MerchantRuntime {
    pub merchant: Arc<Merchant>,
    pub flows: Arc<FlowRegistry>,
    /// The service-wide OTP limits with the merchant's overrides (allowed prefixes, its own
    /// hourly ceiling).
    pub otp_base: OtpPolicy,
}

impl MerchantRuntime {
    /// The same merchant, no longer served: its flows and limits, no callback URL.
    fn retire(&self) -> MerchantRuntime {
        let mut merchant = (*self.merchant).clone();
        merchant.callback_url = None;
        MerchantRuntime {
            merchant: Arc::new(merchant),
            flows: self.flows.clone(),
            otp_base: self.otp_base.clone(),
        }
    }

    /// What `{NAME}` stands for in this merchant's flows.
    pub fn urls(&self) -> &UrlNames {
        self.flows.urls()
    }

    /// Where this merchant's callbacks go when a flow names no URL of its own.
    pub fn callback_url(&self) -> Option<&str> {
        self.merchant
            .callback_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
    }

    /// The business number (E.164) of the merchant's number `phone_number_id`, for `wa.me`
    /// links.
    pub fn business_number(&self, phone_number_id: &str) -> Option<&str> {
        self.merchant
            .numbers
            .iter()
            .find(|n| n.phone_number_id == phone_number_id)
            .and_then(|n| n.business_number.as_deref())
    }
}

/// The values of a merchant's flow URL names; required outside sandbox mode.
/// A merchant of a tenants file names its own settings only.
fn url_names(merchant: &Merchant, from_file: bool) -> UrlNames {
    UrlNames {
        hook_base_url: merchant.hook_base_url.clone(),
        callback_url: merchant.callback_url.clone(),
        required: !merchant.sandbox(),
        settings_only: from_file,
    }
}

/// The service-wide limits with the merchant's overrides.
fn otp_policy(merchant: &Merchant, base: &OtpPolicy) -> OtpPolicy {
    OtpPolicy {
        allowed_prefixes: merchant
            .otp_allowed_prefixes
            .clone()
            .unwrap_or_else(|| base.allowed_prefixes.clone()),
        merchant_sends_per_hour: merchant.otp_sends_per_hour,
        ..base.clone()
    }
}

/// Every merchant's runtime settings, by merchant id.
#[derive(Debug)]
pub struct MerchantRuntimes {
    by_id: HashMap<String, Arc<MerchantRuntime>>,
    /// Merchants no longer served, for the sessions they leave behind.
    retired: HashMap<String, Arc<MerchantRuntime>>,
    /// The merchant of the default scope (records written before merchants existed).
    default: Arc<MerchantRuntime>,
}

impl MerchantRuntimes {
    /// Loads every merchant's flows. The error names each merchant whose flows do not load,
    /// with every message (`file:line:col`).
    pub fn load(tenants: &Tenants, otp_base: &OtpPolicy) -> Result<MerchantRuntimes, String> {
        let (by_id, errors) = build(None, tenants, otp_base);
        let default = by_id.get(&tenants.default_scope().merchant).cloned();
        match default {
            Some(default) if errors.is_empty() => Ok(MerchantRuntimes {
                by_id,
                retired: HashMap::new(),
                default,
            }),
            _ => Err(errors.join("\n")),
        }
    }

    /// The settings for `tenants`, reusing what did not change; with the error of every
    /// merchant whose new flows did not load (it keeps its old ones, or is left out when it
    /// had none).
    pub fn rebuilt(
        &self,
        tenants: &Tenants,
        otp_base: &OtpPolicy,
    ) -> (MerchantRuntimes, Vec<String>) {
        let (by_id, errors) = build(Some(self), tenants, otp_base);
        let default = by_id
            .get(&tenants.default_scope().merchant)
            .cloned()
            .unwrap_or_else(|| self.default.clone());
        let mut retired: HashMap<String, Arc<MerchantRuntime>> = self
            .retired
            .iter()
            .filter(|(id, _)| !by_id.contains_key(*id))
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect();
        for (id, gone) in self.by_id.iter().filter(|(id, _)| !by_id.contains_key(*id)) {
            retired.insert(id.clone(), Arc::new(gone.retire()));
        }
        (
            MerchantRuntimes {
                by_id,
                retired,
                default,
            },
            errors,
        )
    }

    /// The merchant with this id, if it is served.
    pub fn get(&self, merchant: &str) -> Option<&Arc<MerchantRuntime>> {
        self.by_id.get(merchant)
    }

    /// The merchant of the default scope.
    pub fn default_merchant(&self) -> &Arc<MerchantRuntime> {
        &self.default
    }

    /// The merchant with this id, served or retired; the default one for records written
    /// before merchants existed (an empty id) or of a merchant this process never knew.
    pub fn get_or_default(&self, merchant: &str) -> &Arc<MerchantRuntime> {
        self.by_id
            .get(merchant)
            .or_else(|| self.retired.get(merchant))
            .unwrap_or(&self.default)
    }

    /// Every merchant served.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<MerchantRuntime>> {
        self.by_id.values()
    }
}

/// Each merchant's settings, reusing `previous`'s flows where the source and URLs are the same.
fn build(
    previous: Option<&MerchantRuntimes>,
    tenants: &Tenants,
    otp_base: &OtpPolicy,
) -> (HashMap<String, Arc<MerchantRuntime>>, Vec<String>) {
    let mut by_id = HashMap::new();
    let mut errors = Vec::new();
    for merchant in tenants.merchants() {
        let urls = url_names(merchant, tenants.is_declared_in_file());
        let old = previous.and_then(|p| p.by_id.get(&merchant.id));
        let same = old.filter(|o| o.flows.source() == &merchant.flows && o.urls() == &urls);
        let flows = match same {
            Some(old) => old.flows.clone(),
            None => match FlowRegistry::load_from(&merchant.flows, urls) {
                Ok(flows) => Arc::new(flows),
                Err(e) => {
                    let whose = if merchant.id == crate::tenants::DEFAULT_MERCHANT {
                        String::new()
                    } else {
                        format!("merchant `{}`: ", merchant.id)
                    };
                    errors.push(format!("{whose}invalid flows in {}:\n{e}", merchant.flows));
                    match old {
                        Some(old) => old.flows.clone(),
                        None => continue,
                    }
                }
            },
        };
        let runtime = MerchantRuntime {
            merchant: merchant.clone(),
            flows,
            otp_base: otp_policy(merchant, otp_base),
        };
        by_id.insert(merchant.id.clone(), Arc::new(runtime));
    }
    (by_id, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenants::{FlowSource, KeyDigest, Number};
    use std::path::{Path, PathBuf};

    fn merchant(id: &str, number: &str, flows: FlowSource) -> Merchant {
        Merchant {
            api_keys: vec![KeyDigest::of(id.as_bytes())],
            callback_url: Some(format!("http://127.0.0.1:9/{id}/callbacks")),
            hook_base_url: Some(format!("http://127.0.0.1:9/{id}/hooks")),
            otp_sends_per_hour: (id == "b").then_some(7),
            otp_allowed_prefixes: (id == "b").then(|| vec!["+91".to_owned()]),
            ..Merchant::new(
                id,
                flows,
                vec![Number {
                    business_number: Some(format!("+1555{number}")),
                    ..Number::new(number)
                }],
            )
        }
    }

    fn bundled(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("flows")
            .join(name)
    }

    #[test]
    fn each_merchant_gets_its_flows_urls_and_limits_and_a_rebuild_keeps_what_did_not_change() {
        let dir = tempfile::tempdir().expect("tempdir");
        let own = dir.path().join("support_identity.toml");
        std::fs::copy(bundled("support_identity.toml"), &own).expect("copy");
        let a = merchant("a", "1", FlowSource::Dir(bundled("")));
        let b = merchant("b", "2", FlowSource::Files(vec![own.clone()]));
        let base = OtpPolicy {
            allowed_prefixes: vec!["+44".into()],
            ..OtpPolicy::default()
        };
        let tenants = Tenants::new(vec![a.clone(), b.clone()]).expect("tenants");
        let runtimes = MerchantRuntimes::load(&tenants, &base).expect("loads");
        let (ra, rb) = (runtimes.get("a").expect("a"), runtimes.get("b").expect("b"));
        assert!(ra.flows.get("signup_verification").is_some());
        assert!(
            rb.flows.get("signup_verification").is_none(),
            "b lists one file"
        );
        assert!(rb.flows.get("support_identity").is_some());
        assert_eq!(
            rb.urls().value("WAOTP_HOOK_BASE_URL").as_deref(),
            Some("http://127.0.0.1:9/b/hooks")
        );
        assert_eq!(rb.callback_url(), Some("http://127.0.0.1:9/b/callbacks"));
        assert_eq!(rb.business_number("2"), Some("+15552"));
        assert_eq!(ra.otp_base.allowed_prefixes, vec!["+44".to_owned()]);
        assert_eq!(rb.otp_base.allowed_prefixes, vec!["+91".to_owned()]);
        assert_eq!(rb.otp_base.merchant_sends_per_hour, Some(7));
        assert_eq!(runtimes.default_merchant().merchant.id, "a");

        // b's file breaks and c arrives: a keeps its very flows, b keeps its old ones (and
        // the error says so), c is loaded.
        std::fs::write(&own, "id = \"broken\"\n").expect("write");
        let b_moved = merchant("b", "2", FlowSource::Files(vec![own.clone(), own.clone()]));
        let c = merchant(
            "c",
            "3",
            FlowSource::Files(vec![bundled("cod_confirmation.toml")]),
        );
        let tenants = Tenants::new(vec![a, b_moved, c]).expect("tenants");
        let (next, errors) = runtimes.rebuilt(&tenants, &base);
        assert!(Arc::ptr_eq(
            &next.get("a").expect("a").flows,
            &runtimes.get("a").expect("a").flows
        ));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with("merchant `b`: invalid flows in"),
            "{errors:?}"
        );
        assert!(next
            .get("b")
            .expect("b")
            .flows
            .get("support_identity")
            .is_some());
        assert!(next
            .get("c")
            .expect("c")
            .flows
            .get("cod_confirmation")
            .is_some());

        // A merchant that is gone is no longer served; its sessions keep its own flows and
        // limits, never another merchant's, and have no callback URL.
        let tenants = Tenants::new(vec![b]).expect("tenants");
        let (last, _) = next.rebuilt(&tenants, &base);
        assert!(last.get("c").is_none());
        let gone = last.get_or_default("c");
        assert_eq!(gone.merchant.id, "c");
        assert!(gone.flows.get("cod_confirmation").is_some());
        assert_eq!(gone.callback_url(), None);
        // … also after another reload, until it comes back.
        let (again, _) = last.rebuilt(&tenants, &base);
        assert_eq!(again.get_or_default("c").merchant.id, "c");
        assert_eq!(again.get_or_default("").merchant.id, "b");
    }
}
