//! The PostgreSQL store's tests: the whole conformance suite (see
//! [`crate::conformance`]), each case on a database of its own so cases
//! run in parallel, then what only a server apart from the process has: a
//! restart under an open store.
//!
//! They need a server: `BERTH_TEST_PG_URL` names its admin database
//! (`scripts/test.sh` starts a throwaway cluster and sets it). Without it
//! every test here fails, unless `BERTH_TEST_PG=skip` says to skip them on
//! purpose; a test that passes because nothing ran would hide a backend
//! nobody tested.

mod database;
mod registry;
mod restart;

crate::conformance_tests!(
    handles: match database::fresh() {
        Some(database) => database,
        None => return,
    }
);
