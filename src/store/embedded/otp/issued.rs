//! What the runtime asks for when issuing a code, and what it gets back.
//!
//! Plain data only: the ledger in the parent module decides; these types carry the answer
//! without ever exposing a code except in a fresh [`Issued`].

use chrono::{DateTime, Utc};

use crate::otp::{IssueRefusal, OtpCode, OtpRecord};

/// How a code is being issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueKind {
    /// The session's first code, to be sent by the outbox (a session whose code is still
    /// unused gets the resend rules instead).
    First,
    /// A new code replacing the session's current one, keeping its attempt count.
    Resend,
    /// A reverse-OTP code: handed to the caller (the merchant API answer) for the customer to
    /// send to us, so no sealed copy is kept.
    Reverse,
}

/// What an issue call did.
#[derive(Debug)]
pub enum IssueOutcome {
    /// A new code was issued.
    Issued(Issued),
    /// This step already issued the session's current code (a replay after a crash or a
    /// retried request): nothing changed, nothing was counted, and the outbox still finds the
    /// code with [`OtpLedger::code_for_sending`](super::OtpLedger::code_for_sending) unless it was already sent.
    AlreadyIssued(IssuedCode),
    /// The rules refused; the refusal is already audited.
    Refused(IssueRefusal),
}

/// A freshly issued code. Its digits leave the ledger only here and in
/// [`OtpLedger::code_for_sending`](super::OtpLedger::code_for_sending).
#[derive(Debug)]
pub struct Issued {
    /// For reverse-OTP answers and the offline chat's `/otp`; never store or log it.
    pub code: OtpCode,
    pub info: IssuedCode,
}

/// Facts about the session's current code, without its digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuedCode {
    /// Which code of the session this is: 1 for the first, 2 after one resend…
    pub generation: u32,
    pub expires_at: DateTime<Utc>,
    pub next_resend_at: DateTime<Utc>,
    pub attempts_left: u8,
    /// A third party's code that must not be sent (see `IssueGrant::withheld`): no sealed
    /// copy is kept, and the caller queues nothing.
    pub withheld: bool,
}

impl IssuedCode {
    pub(super) fn of(record: &OtpRecord) -> Self {
        Self {
            generation: record.codes_sent(),
            expires_at: record.expires_at(),
            next_resend_at: record.next_resend_at(),
            attempts_left: record.attempts_left(),
            withheld: false,
        }
    }
}

/// The log target of every code issued, refused and checked, whichever engine keeps the ledger.
pub(crate) const OTP_LOG: &str = "waotp::otp";

/// What an issue transaction decided, in either engine; [`Decided::outcome`] turns it into
/// the runtime's answer and logs it (the customer masked, never the code).
pub(crate) enum Decided {
    Replayed(IssuedCode),
    Granted(IssuedCode),
    Refused(IssueRefusal),
}

impl Decided {
    /// The answer for the runtime: a fresh `code` only when this call granted it.
    pub(crate) fn outcome(
        self,
        req: &crate::otp::rules::IssueRequest<'_>,
        code: OtpCode,
    ) -> IssueOutcome {
        let session_id = req.subject.session_id();
        let customer = req.customer.masked();
        match self {
            Decided::Replayed(info) => {
                tracing::debug!(target: OTP_LOG, session_id, flow = req.flow, "otp issue step replayed");
                IssueOutcome::AlreadyIssued(info)
            }
            Decided::Granted(info) => {
                tracing::info!(
                    target: OTP_LOG,
                    session_id, flow = req.flow, %customer, generation = info.generation, withheld = info.withheld, "otp issued"
                );
                IssueOutcome::Issued(Issued { code, info })
            }
            Decided::Refused(refusal) => {
                tracing::info!(
                    target: OTP_LOG,
                    session_id, flow = req.flow, %customer, reason = refusal.as_str(), "otp issue refused"
                );
                IssueOutcome::Refused(refusal)
            }
        }
    }
}
