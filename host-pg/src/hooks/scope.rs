//! Which statements are in scope: those that read a table enabled with
//! `ruvector_enable_neural_dag`. The set of enabled tables is cached per backend and read
//! again when the shared scope version moves; the set read is shared (`shared::scope_set`), so
//! that a session's first statement needs no query of its own.

use super::*;

/// Enabled tables, as cached in this backend.
pub(super) struct Enabled {
    /// The shared scope version they were read at.
    version: u64,
    /// The OID of the `ruvector_dag.enabled_tables` they were read from.
    table: u32,
    /// Sorted: every statement in scope looks its relations up here (a binary search over a
    /// few words, no hashing).
    sorted: Vec<u32>,
}

impl Enabled {
    fn new(version: u64, table: u32, set: &HashSet<u32>) -> Enabled {
        let mut sorted: Vec<u32> = set.iter().copied().collect();
        sorted.sort_unstable();
        Enabled {
            version,
            table,
            sorted,
        }
    }

    fn contains(&self, relid: u32) -> bool {
        self.sorted.binary_search(&relid).is_ok()
    }

    fn set(&self) -> HashSet<u32> {
        self.sorted.iter().copied().collect()
    }
}

thread_local! {
    /// Relation OIDs enabled for learning, with where and when they were read.
    pub(super) static ENABLED: RefCell<Option<Enabled>> = const { RefCell::new(None) };
}

/// A table was enabled (`true`) or disabled in this transaction: this backend sees it at
/// once; other backends after commit.
pub fn scope_changed(relid: u32, enabled: bool) {
    let table = enabled_tables_oid();
    let mut set = enabled_tables(table);
    if enabled {
        set.insert(relid);
    } else {
        set.remove(&relid);
    }
    ENABLED.with(|e| *e.borrow_mut() = Some(Enabled::new(shared::scope_version(), table, &set)));
    register_xact_callback(PgXactCallbackEvent::Commit, shared::bump_scope);
    register_xact_callback(PgXactCallbackEvent::Abort, forget_enabled);
}

pub(super) fn forget_enabled() {
    ENABLED.with(|e| *e.borrow_mut() = None);
}

/// The enabled tables, read from `ruvector_dag.enabled_tables` of OID `table` (this backend's
/// cache, the set another backend shared, or the table itself, in that order).
pub(super) fn enabled_tables(table: u32) -> HashSet<u32> {
    let version = shared::scope_version();
    if let Some(set) = ENABLED.with(|e| {
        e.borrow()
            .as_ref()
            .filter(|c| c.version == version && c.table == table)
            .map(Enabled::set)
    }) {
        return set;
    }
    // SAFETY: reads backend-local state.
    let (db, writing) = unsafe {
        (
            pg_sys::MyDatabaseId.to_u32(),
            pg_sys::GetTopTransactionIdIfAny() != pg_sys::InvalidTransactionId,
        )
    };
    // A transaction that wrote may have enabled or disabled a table itself: it reads the table
    // (its own rows), never the set another backend read from committed rows.
    if let Some(shared_set) = (!writing).then(|| shared::scope_set(db, table)).flatten() {
        let set: HashSet<u32> = shared_set.into_iter().collect();
        ENABLED.with(|e| *e.borrow_mut() = Some(Enabled::new(version, table, &set)));
        return set;
    }
    // SAFETY: reads a backend-local flag.
    if !unsafe { pg_sys::ActiveSnapshotSet() } {
        // Reading needs a snapshot; keep what is known until the next statement that has one.
        return ENABLED.with(|e| e.borrow().as_ref().map(Enabled::set).unwrap_or_default());
    }
    let _busy = Busy::enter();
    // Read with a snapshot taken now, after `version` was current: the statement's own
    // snapshot may be older than the commit that moved the version, and what is read is kept
    // (and shared) for that version.
    let oids = crate::guarded(|| {
        // SAFETY: pushed and popped around the read (an ERROR in it rolls back `guarded`'s
        // subtransaction, which pops the snapshots pushed in it).
        unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetLatestSnapshot()) };
        let read = Spi::connect(|c| {
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
        .map_err(|e| e.to_string());
        // SAFETY: the snapshot pushed above.
        unsafe { pg_sys::PopActiveSnapshot() };
        read
    });
    match oids {
        Ok(set) => {
            // A transaction that wrote may see its own uncommitted rows: kept here only.
            if !writing {
                shared::publish_scope(db, table, version, &set);
            }
            ENABLED.with(|e| *e.borrow_mut() = Some(Enabled::new(version, table, &set)));
            set
        }
        Err(e) => {
            note_error("reading ruvector_dag.enabled_tables", &e);
            HashSet::new()
        }
    }
}

/// Make the enabled set another backend shared for `table` at scope version `version` this
/// backend's cache; false when there is none to take (or this transaction wrote: it reads the
/// table itself, see [`enabled_tables`]).
fn take_shared(table: u32, version: u64) -> bool {
    // SAFETY: reads backend-local state.
    let (db, writing) = unsafe {
        (
            pg_sys::MyDatabaseId.to_u32(),
            pg_sys::GetTopTransactionIdIfAny() != pg_sys::InvalidTransactionId,
        )
    };
    if writing {
        return false;
    }
    let Some(mut sorted) = shared::scope_set(db, table) else {
        return false;
    };
    sorted.sort_unstable();
    sorted.dedup();
    ENABLED.with(|e| {
        *e.borrow_mut() = Some(Enabled {
            version,
            table,
            sorted,
        })
    });
    true
}

/// The OID of `ruvector_dag.enabled_tables`, 0 when the extension is not installed in this
/// database.
pub(super) fn enabled_tables_oid() -> u32 {
    crate::extension_relid(crate::ENABLED_TABLES)
}

/// Relations a query reads, including subqueries and CTEs in its range table.
pub(crate) unsafe fn query_relations(q: *mut pg_sys::Query, out: &mut Vec<u32>, depth: usize) {
    visit_relations(q, &mut |r| out.push(r), depth);
}

/// [`query_relations`], each relation handed to `f` as it is found (nothing allocated).
unsafe fn visit_relations(q: *mut pg_sys::Query, f: &mut impl FnMut(u32), depth: usize) {
    if q.is_null() || depth > 64 {
        return;
    }
    for rte in list_ptrs::<pg_sys::RangeTblEntry>((*q).rtable) {
        if rte.is_null() {
            continue;
        }
        match (*rte).rtekind {
            pg_sys::RTEKind::RTE_RELATION => f((*rte).relid.to_u32()),
            pg_sys::RTEKind::RTE_SUBQUERY => visit_relations((*rte).subquery, f, depth + 1),
            _ => {}
        }
    }
    for cte in list_ptrs::<pg_sys::CommonTableExpr>((*q).cteList) {
        if !cte.is_null() {
            visit_relations((*cte).ctequery as *mut pg_sys::Query, f, depth + 1);
        }
    }
}

/// The pointers a PostgreSQL `List` holds, without copying them out.
///
/// # Safety
/// `list` is null or a valid pointer list that outlives the iterator.
pub(super) unsafe fn list_ptrs<T>(list: *mut pg_sys::List) -> impl Iterator<Item = *mut T> {
    let n = if list.is_null() {
        0
    } else {
        (*list).length as usize
    };
    // SAFETY: i < the list's length (the caller's contract).
    (0..n).map(move |i| unsafe { (*(*list).elements.add(i)).ptr_value as *mut T })
}

/// The enabled tables `parse` reads (none: the statement is out of scope). Every statement
/// of a session in `learn`, `frozen` or `observe` mode asks: with this backend's set current,
/// a statement that reads no enabled table allocates nothing.
pub(super) unsafe fn in_scope(parse: *mut pg_sys::Query) -> Vec<u32> {
    if (*parse).commandType == pg_sys::CmdType::CMD_UTILITY {
        return Vec::new();
    }
    let table = enabled_tables_oid();
    if table == 0 {
        return Vec::new();
    }
    let mut rels = Vec::new();
    // The common case, a current cache: only the enabled relations are collected.
    let version = shared::scope_version();
    let cached = |rels: &mut Vec<u32>| {
        ENABLED.with(|e| match e.borrow().as_ref() {
            Some(c) if c.version == version && c.table == table => {
                visit_relations(
                    parse,
                    &mut |r| {
                        if c.contains(r) {
                            rels.push(r);
                        }
                    },
                    0,
                );
                true
            }
            _ => false,
        })
    };
    if !cached(&mut rels) {
        query_relations(parse, &mut rels, 0);
        if rels.is_empty() {
            return rels;
        }
        // A session's first statement: the set another backend shared, as this backend's
        // cache (no hash set built on the way).
        let taken = take_shared(table, version);
        rels.clear();
        if !(taken && cached(&mut rels)) {
            query_relations(parse, &mut rels, 0);
            let enabled = enabled_tables(table);
            rels.retain(|r| enabled.contains(r));
        }
    }
    rels.sort_unstable();
    rels.dedup();
    rels
}
