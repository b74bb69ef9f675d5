//! The extension's relation OIDs, shared between processes: a session's first statement finds
//! `ruvector_dag.enabled_tables` and `ruvector_dag.learned_state` in shared memory instead of
//! making two catalog lookups of its own (cold in a new backend: tens of microseconds).
//!
//! A shared OID is good until the names epoch moves ([`crate::shared::names_changed`]). It moves
//! after the commit of a transaction that dropped, renamed or moved one of the extension's
//! relations or its schema, or dropped a database (the object access hook marks such a
//! transaction; the resource release callback bumps the epoch once the commit's invalidations
//! were sent, so a lookup that begins after the bump, having taken in its invalidations,
//! finds the new names). A lookup shares what it found only when the epoch did not move while
//! it looked. A transaction that wrote anything neither reads nor shares OIDs (it may see its
//! own uncommitted names), nor does a standby (its catalog changes by WAL replay, where no
//! hook runs).

use std::cell::Cell;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{register_xact_callback, PgXactCallbackEvent};

use crate::shared;

thread_local! {
    /// This transaction dropped, renamed or moved one of the extension's names.
    static PENDING: Cell<bool> = const { Cell::new(false) };
    /// Catalog lookups of the extension's relations this process made (tests).
    static LOOKUPS: Cell<u64> = const { Cell::new(0) };
}

static mut PREV_OBJECT_ACCESS: pg_sys::object_access_hook_type = None;

/// Install the object access hook and the resource release callback (`_PG_init`, preloaded).
pub fn install() {
    // SAFETY: _PG_init runs once per process, single-threaded, before any query; the callback
    // is registered for the process's life.
    unsafe {
        PREV_OBJECT_ACCESS = pg_sys::object_access_hook;
        pg_sys::object_access_hook = Some(object_access);
        pg_sys::RegisterResourceReleaseCallback(Some(released), std::ptr::null_mut());
    }
}

/// Which shared entry holds the relation named by the static `name` (`crate::ENABLED_TABLES`,
/// `crate::LEARNED_STATE`), if any.
pub(crate) fn index_of(name: &'static std::ffi::CStr) -> Option<usize> {
    if std::ptr::eq(name, crate::ENABLED_TABLES) {
        Some(0)
    } else if std::ptr::eq(name, crate::LEARNED_STATE) {
        Some(1)
    } else {
        None
    }
}

/// Whether this process may read and share the OIDs now: shared memory is there, this is not a
/// standby and the transaction has written nothing.
pub(crate) fn shareable() -> bool {
    // SAFETY: reads backend-local transaction state.
    shared::available()
        && !PENDING.get()
        && unsafe { pg_sys::GetTopTransactionIdIfAny() } == pg_sys::InvalidTransactionId
        && !crate::guc::standby()
}

/// A catalog lookup of one of the extension's relations is about to be made.
pub(crate) fn counted_lookup() {
    LOOKUPS.set(LOOKUPS.get() + 1);
}

/// Catalog lookups of the extension's relations this process made.
pub fn lookups() -> u64 {
    LOOKUPS.get()
}

/// Whether this transaction changed one of the extension's names (its commit moves the epoch).
pub fn pending() -> bool {
    PENDING.get()
}

#[pg_guard]
unsafe extern "C-unwind" fn object_access(
    access: pg_sys::ObjectAccessType::Type,
    class_id: pg_sys::Oid,
    object_id: pg_sys::Oid,
    sub_id: std::ffi::c_int,
    arg: *mut std::ffi::c_void,
) {
    if let Some(prev) = PREV_OBJECT_ACCESS {
        pg_sys::ffi::pg_guard_ffi_boundary(|| prev(access, class_id, object_id, sub_id, arg));
    }
    if PENDING.get()
        || !(access == pg_sys::ObjectAccessType::OAT_DROP
            || access == pg_sys::ObjectAccessType::OAT_POST_ALTER)
    {
        return;
    }
    if class_id == pg_sys::DatabaseRelationId {
        if access == pg_sys::ObjectAccessType::OAT_DROP {
            mark();
        }
        return;
    }
    let namespace = class_id == pg_sys::NamespaceRelationId;
    if !namespace && class_id != pg_sys::RelationRelationId {
        return;
    }
    // Shared, or (a lookup may be sharing it right now) the extension's schema or in it.
    let ours = shared::is_shared_name(pg_sys::MyDatabaseId.to_u32(), object_id.to_u32()) || {
        let ns = pg_sys::get_namespace_oid(c"ruvector_dag".as_ptr(), true);
        ns != pg_sys::InvalidOid
            && if namespace {
                object_id == ns
            } else {
                pg_sys::get_rel_namespace(object_id) == ns
            }
    };
    if ours {
        mark();
    }
}

/// This transaction changes the extension's names: its commit moves the epoch; a PREPARE of it
/// stops the sharing.
fn mark() {
    PENDING.set(true);
    register_xact_callback(PgXactCallbackEvent::Prepare, shared::stop_sharing_names);
}

#[pg_guard]
unsafe extern "C-unwind" fn released(
    phase: pg_sys::ResourceReleasePhase::Type,
    is_commit: bool,
    is_top_level: bool,
    _arg: *mut std::ffi::c_void,
) {
    if phase != pg_sys::ResourceReleasePhase::RESOURCE_RELEASE_AFTER_LOCKS || !is_top_level {
        return;
    }
    // After the commit's invalidations were sent (AtEOXact_Inval runs before the locks are
    // released).
    if PENDING.replace(false) && is_commit {
        shared::names_changed();
    }
}
