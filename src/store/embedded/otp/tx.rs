//! JSON values in sled trees, inside and outside transactions, with the ledger's errors.
//!
//! Owns only the encoding of ledger values and the mapping of sled's transaction errors; the
//! ledger's rules and tree layout live in the parent module.

use serde::{de::DeserializeOwned, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use super::LedgerError;

pub(super) type TxResult<T> = Result<T, ConflictableTransactionError<LedgerError>>;

pub(super) fn decode<T: DeserializeOwned>(
    tree: &'static str,
    bytes: &[u8],
) -> Result<T, LedgerError> {
    serde_json::from_slice(bytes).map_err(|source| LedgerError::Corrupt { tree, source })
}

/// Reads a value inside a transaction; an unreadable value aborts it.
pub(super) fn get<T: DeserializeOwned>(
    tree: &TransactionalTree,
    name: &'static str,
    key: impl AsRef<[u8]>,
) -> TxResult<Option<T>> {
    match tree.get(key.as_ref())? {
        Some(bytes) => decode(name, &bytes)
            .map(Some)
            .map_err(ConflictableTransactionError::Abort),
        None => Ok(None),
    }
}

/// Writes a value inside a transaction (logged with it: [`crate::store::embedded::redo`]).
pub(super) fn put<T: Serialize>(
    tree: &TransactionalTree,
    name: &'static str,
    key: impl AsRef<[u8]>,
    value: &T,
) -> TxResult<()> {
    let bytes = serde_json::to_vec(value).expect("ledger values are plain data and serialize");
    crate::store::embedded::redo::tx_put(tree, name, key.as_ref(), bytes)?;
    Ok(())
}

/// Removes a value inside a transaction (logged with it).
pub(super) fn tx_remove(
    tree: &TransactionalTree,
    name: &'static str,
    key: impl AsRef<[u8]>,
) -> TxResult<()> {
    crate::store::embedded::redo::tx_remove(tree, name, key.as_ref())?;
    Ok(())
}

/// Reads a value outside any transaction.
pub(super) fn read<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    key: impl AsRef<[u8]>,
) -> Result<Option<T>, LedgerError> {
    tree.get(key.as_ref())?
        .map(|bytes| decode(name, &bytes))
        .transpose()
}

pub(super) fn finish<T>(
    result: Result<T, TransactionError<LedgerError>>,
) -> Result<T, LedgerError> {
    result.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => LedgerError::from(e),
    })
}
