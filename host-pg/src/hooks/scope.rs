//! Which statements are in scope: those that read a table enabled with
//! `ruvector_enable_neural_dag`. The set of enabled tables is cached per backend and read
//! again when the shared scope version moves.

use super::*;

thread_local! {
    /// Relation OIDs enabled for learning, with the shared scope version they were read at.
    pub(super) static ENABLED: RefCell<Option<(u64, HashSet<u32>)>> = const { RefCell::new(None) };
}

/// A table was enabled (`true`) or disabled in this transaction: this backend sees it at
/// once; other backends after commit.
pub fn scope_changed(relid: u32, enabled: bool) {
    let mut set = enabled_tables();
    if enabled {
        set.insert(relid);
    } else {
        set.remove(&relid);
    }
    ENABLED.with(|e| *e.borrow_mut() = Some((shared::scope_version(), set)));
    register_xact_callback(PgXactCallbackEvent::Commit, shared::bump_scope);
    register_xact_callback(PgXactCallbackEvent::Abort, forget_enabled);
}

pub(super) fn forget_enabled() {
    ENABLED.with(|e| *e.borrow_mut() = None);
}

pub(super) fn enabled_tables() -> HashSet<u32> {
    let version = shared::scope_version();
    if let Some(set) = ENABLED.with(|e| {
        e.borrow()
            .as_ref()
            .filter(|(v, _)| *v == version)
            .map(|(_, s)| s.clone())
    }) {
        return set;
    }
    // SAFETY: reads a backend-local flag.
    if !unsafe { pg_sys::ActiveSnapshotSet() } {
        // Reading needs a snapshot; keep what is known until the next statement that has one.
        return ENABLED.with(|e| {
            e.borrow()
                .as_ref()
                .map(|(_, s)| s.clone())
                .unwrap_or_default()
        });
    }
    let _busy = Busy::enter();
    let oids = crate::guarded(|| {
        Spi::connect(|c| {
            let rows = c.select(
                "SELECT relid::oid FROM ruvector_dag.enabled_tables",
                None,
                &[],
            )?;
            let mut out = HashSet::new();
            for row in rows {
                if let Some(oid) = row.get::<pg_sys::Oid>(1)? {
                    out.insert(oid.to_u32());
                }
            }
            Ok::<_, pgrx::spi::Error>(out)
        })
        .map_err(|e| e.to_string())
    });
    match oids {
        Ok(set) => {
            ENABLED.with(|e| *e.borrow_mut() = Some((version, set.clone())));
            set
        }
        Err(e) => {
            note_error("reading ruvector_dag.enabled_tables", &e);
            HashSet::new()
        }
    }
}

/// Whether the extension is installed in this database (its table exists).
pub(super) fn extension_present() -> bool {
    // SAFETY: catalog lookup by name.
    unsafe {
        let ns = pg_sys::get_namespace_oid(c"ruvector_dag".as_ptr(), true);
        ns != pg_sys::InvalidOid
            && pg_sys::get_relname_relid(c"enabled_tables".as_ptr(), ns) != pg_sys::InvalidOid
    }
}

/// Relations a query reads, including subqueries and CTEs in its range table.
pub(crate) unsafe fn query_relations(q: *mut pg_sys::Query, out: &mut Vec<u32>, depth: usize) {
    if q.is_null() || depth > 64 {
        return;
    }
    for rte in list_ptrs::<pg_sys::RangeTblEntry>((*q).rtable) {
        if rte.is_null() {
            continue;
        }
        match (*rte).rtekind {
            pg_sys::RTEKind::RTE_RELATION => out.push((*rte).relid.to_u32()),
            pg_sys::RTEKind::RTE_SUBQUERY => query_relations((*rte).subquery, out, depth + 1),
            _ => {}
        }
    }
    for cte in list_ptrs::<pg_sys::CommonTableExpr>((*q).cteList) {
        if !cte.is_null() {
            query_relations((*cte).ctequery as *mut pg_sys::Query, out, depth + 1);
        }
    }
}

pub(super) unsafe fn list_ptrs<T>(list: *mut pg_sys::List) -> Vec<*mut T> {
    if list.is_null() {
        return Vec::new();
    }
    (0..(*list).length as usize)
        .map(|i| (*(*list).elements.add(i)).ptr_value as *mut T)
        .collect()
}

/// The enabled tables `parse` reads (none: the statement is out of scope).
pub(super) unsafe fn in_scope(parse: *mut pg_sys::Query) -> Vec<u32> {
    if (*parse).commandType == pg_sys::CmdType::CMD_UTILITY || !extension_present() {
        return Vec::new();
    }
    let mut rels = Vec::new();
    query_relations(parse, &mut rels, 0);
    if rels.is_empty() {
        return rels;
    }
    // The common case, a current cache, without copying the set.
    let version = shared::scope_version();
    let cached = ENABLED.with(|e| match e.borrow().as_ref() {
        Some((v, set)) if *v == version => {
            rels.retain(|r| set.contains(r));
            true
        }
        _ => false,
    });
    if !cached {
        let enabled = enabled_tables();
        rels.retain(|r| enabled.contains(r));
    }
    rels.sort_unstable();
    rels.dedup();
    rels
}
