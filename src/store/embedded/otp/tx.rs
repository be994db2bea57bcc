//! JSON values in the ledger's trees, inside and outside its transactions, with the ledger's
//! errors.
//!
//! Owns only the encoding of ledger values; the ledger's rules and tree layout live in the
//! parent module, its transactions in [`crate::store::embedded::redo::Redo::transact`].

use serde::{de::DeserializeOwned, Serialize};

use super::LedgerError;
use crate::store::embedded::redo::{LoggedTree, TxTree};

pub(super) fn decode<T: DeserializeOwned>(
    tree: &'static str,
    bytes: &[u8],
) -> Result<T, LedgerError> {
    serde_json::from_slice(bytes).map_err(|source| LedgerError::Corrupt { tree, source })
}

/// Reads a value inside a transaction; an unreadable value aborts it.
pub(super) fn get<T: DeserializeOwned>(
    tree: &TxTree<'_>,
    name: &'static str,
    key: impl AsRef<[u8]>,
) -> Result<Option<T>, LedgerError> {
    tree.get(key.as_ref())?
        .map(|bytes| decode(name, &bytes))
        .transpose()
}

/// Writes a value inside a transaction.
pub(super) fn put<T: Serialize>(tree: &TxTree<'_>, key: impl AsRef<[u8]>, value: &T) {
    let bytes = serde_json::to_vec(value).expect("ledger values are plain data and serialize");
    tree.insert(key.as_ref(), bytes);
}

/// Reads a value outside any transaction.
pub(super) fn read<T: DeserializeOwned>(
    tree: &LoggedTree,
    name: &'static str,
    key: impl AsRef<[u8]>,
) -> Result<Option<T>, LedgerError> {
    tree.get(key.as_ref())?
        .map(|bytes| decode(name, &bytes))
        .transpose()
}
