//! A `PlannedStmt` straight from the planner -> the core's `PlanDag`, without EXPLAIN: what
//! the planner hook decides on. Mirrors the core's EXPLAIN importer: same operator names, the
//! relation name hashed the same way (so shape hashes agree), InitPlans (CTEs included) as
//! inputs of the node that holds them, and every CTE Scan fed by its CTE's plan, which makes a
//! CTE read twice a DAG. SubPlans inside expressions are not walked (they are not inputs of a
//! plan node in the tree; EXPLAIN shows them but the planner's arms rarely change them).

use std::collections::HashMap;

use pgrx::pg_sys;
use ruvector_dag_core::rng::fnv1a64;
use ruvector_dag_core::{Actuals, OpKind, PlanDag, PlanNode};

/// Deepest plan tree walked (deeper is refused rather than risking the stack).
const MAX_DEPTH: usize = 1000;

struct Walker<'a> {
    stmt: *mut pg_sys::PlannedStmt,
    nodes: Vec<PlanNode>,
    /// The address of each node's `Plan`, by node id.
    plans: Vec<usize>,
    edges: Vec<(u32, u32)>,
    /// Subplan id (1-based, as in `SubPlan.plan_id` and `CteScan.ctePlanId`) -> its root node.
    subplan_roots: HashMap<i32, u32>,
    /// CTE Scans waiting for their CTE: (scan node, cte plan id).
    cte_scans: Vec<(u32, i32)>,
    /// Measured (total ms over all loops, rows over all loops, loops) by `Plan` address.
    measured: Option<&'a HashMap<usize, Measured>>,
}

/// What the executor's instrumentation measured for one plan node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub total_ms: f64,
    pub rows: f64,
    pub loops: f64,
}

fn op_name(tag: pg_sys::NodeTag) -> &'static str {
    use pg_sys::NodeTag::*;
    match tag {
        T_Result => "Result",
        T_ProjectSet => "ProjectSet",
        T_ModifyTable => "ModifyTable",
        T_Append => "Append",
        T_MergeAppend => "Merge Append",
        T_RecursiveUnion => "Recursive Union",
        T_BitmapAnd => "BitmapAnd",
        T_BitmapOr => "BitmapOr",
        T_SeqScan => "Seq Scan",
        T_SampleScan => "Sample Scan",
        T_IndexScan => "Index Scan",
        T_IndexOnlyScan => "Index Only Scan",
        T_BitmapIndexScan => "Bitmap Index Scan",
        T_BitmapHeapScan => "Bitmap Heap Scan",
        T_TidScan => "Tid Scan",
        T_TidRangeScan => "Tid Range Scan",
        T_SubqueryScan => "Subquery Scan",
        T_FunctionScan => "Function Scan",
        T_ValuesScan => "Values Scan",
        T_TableFuncScan => "Table Function Scan",
        T_CteScan => "CTE Scan",
        T_NamedTuplestoreScan => "Named Tuplestore Scan",
        T_WorkTableScan => "WorkTable Scan",
        T_ForeignScan => "Foreign Scan",
        T_CustomScan => "Custom Scan",
        T_NestLoop => "Nested Loop",
        T_MergeJoin => "Merge Join",
        T_HashJoin => "Hash Join",
        T_Material => "Materialize",
        T_Memoize => "Memoize",
        T_Sort => "Sort",
        T_IncrementalSort => "Incremental Sort",
        T_Group => "Group",
        T_Agg => "Aggregate",
        T_WindowAgg => "WindowAgg",
        T_Unique => "Unique",
        T_Gather => "Gather",
        T_GatherMerge => "Gather Merge",
        T_Hash => "Hash",
        T_SetOp => "SetOp",
        T_LockRows => "LockRows",
        T_Limit => "Limit",
        _ => "Other",
    }
}

fn is_scan(tag: pg_sys::NodeTag) -> bool {
    use pg_sys::NodeTag::*;
    (T_SeqScan as u32..=T_CustomScan as u32).contains(&(tag as u32))
}

/// Iterate a `List` of pointers.
unsafe fn ptrs<T>(list: *mut pg_sys::List) -> Vec<*mut T> {
    if list.is_null() {
        return Vec::new();
    }
    let n = (*list).length as usize;
    (0..n)
        .map(|i| (*(*list).elements.add(i)).ptr_value as *mut T)
        .collect()
}

/// The OID of the table a scan's `scanrelid` names in `stmt`'s range table (None: not a
/// table, or out of range).
///
/// # Safety
/// `stmt` is a valid `PlannedStmt`.
pub unsafe fn scanned_table(
    stmt: *mut pg_sys::PlannedStmt,
    scanrelid: pg_sys::Index,
) -> Option<pg_sys::Oid> {
    let rtable = (*stmt).rtable;
    let i = (scanrelid as usize).checked_sub(1)?;
    if rtable.is_null() || i >= (*rtable).length as usize {
        return None;
    }
    let rte = (*(*rtable).elements.add(i)).ptr_value as *mut pg_sys::RangeTblEntry;
    if rte.is_null() || (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION {
        return None;
    }
    Some((*rte).relid)
}

impl Walker<'_> {
    unsafe fn relation_name(&self, scanrelid: pg_sys::Index) -> Option<String> {
        let name = pg_sys::get_rel_name(scanned_table(self.stmt, scanrelid)?);
        (!name.is_null()).then(|| {
            std::ffi::CStr::from_ptr(name)
                .to_string_lossy()
                .into_owned()
        })
    }

    unsafe fn subplan(&mut self, plan_id: i32, depth: usize) -> Result<Option<u32>, String> {
        if let Some(&root) = self.subplan_roots.get(&plan_id) {
            return Ok(Some(root));
        }
        let subplans = ptrs::<pg_sys::Plan>((*self.stmt).subplans);
        let Some(&plan) = subplans.get((plan_id as usize).wrapping_sub(1)) else {
            return Ok(None);
        };
        if plan.is_null() {
            return Ok(None);
        }
        let root = self.visit(plan, depth + 1)?;
        self.subplan_roots.insert(plan_id, root);
        Ok(Some(root))
    }

    /// Add `plan` and everything below it; returns its node id.
    unsafe fn visit(&mut self, plan: *mut pg_sys::Plan, depth: usize) -> Result<u32, String> {
        use pg_sys::NodeTag::*;
        if depth > MAX_DEPTH {
            return Err(format!("plan deeper than {MAX_DEPTH} levels"));
        }
        let tag = (*plan).type_;
        let mut node = PlanNode::new(
            OpKind::from_explain_name(op_name(tag)),
            (*plan).plan_rows,
            (*plan).total_cost,
        );
        node.startup_cost = (*plan).startup_cost;
        node.width = f64::from((*plan).plan_width);
        node.parallel_aware = (*plan).parallel_aware;
        if is_scan(tag) {
            let scan = plan as *mut pg_sys::Scan;
            if let Some(name) = self.relation_name((*scan).scanrelid) {
                node.relation_hash = fnv1a64(name.as_bytes());
                node.label = name;
            }
        }
        if tag == T_Gather {
            node.workers = (*(plan as *mut pg_sys::Gather)).num_workers.max(0) as u16;
        } else if tag == T_GatherMerge {
            node.workers = (*(plan as *mut pg_sys::GatherMerge)).num_workers.max(0) as u16;
        }
        if let Some(m) = self.measured.and_then(|m| m.get(&(plan as usize))) {
            node.loops = m.loops.max(1.0);
            node.actual = Some(Actuals {
                rows: m.rows,
                self_ms: m.total_ms,
                total_ms: m.total_ms,
            });
        }
        let id = self.nodes.len() as u32;
        self.nodes.push(node);
        self.plans.push(plan as usize);

        let mut children: Vec<*mut pg_sys::Plan> = Vec::new();
        children.extend([(*plan).lefttree, (*plan).righttree]);
        match tag {
            T_Append => children.extend(ptrs((*(plan as *mut pg_sys::Append)).appendplans)),
            T_MergeAppend => {
                children.extend(ptrs((*(plan as *mut pg_sys::MergeAppend)).mergeplans))
            }
            T_BitmapAnd => children.extend(ptrs((*(plan as *mut pg_sys::BitmapAnd)).bitmapplans)),
            T_BitmapOr => children.extend(ptrs((*(plan as *mut pg_sys::BitmapOr)).bitmapplans)),
            T_SubqueryScan => children.push((*(plan as *mut pg_sys::SubqueryScan)).subplan),
            T_CustomScan => {
                children.extend(ptrs((*(plan as *mut pg_sys::CustomScan)).custom_plans))
            }
            T_CteScan => {
                let cte = (*(plan as *mut pg_sys::CteScan)).ctePlanId;
                self.cte_scans.push((id, cte));
            }
            _ => {}
        }
        for child in children.into_iter().filter(|c| !c.is_null()) {
            let c = self.visit(child, depth + 1)?;
            self.edges.push((c, id));
        }
        for sp in ptrs::<pg_sys::SubPlan>((*plan).initPlan) {
            if sp.is_null() {
                continue;
            }
            if let Some(root) = self.subplan((*sp).plan_id, depth)? {
                if !self.edges.contains(&(root, id)) {
                    self.edges.push((root, id));
                }
            }
        }
        Ok(id)
    }
}

/// The planner's `PlannedStmt` as a validated `PlanDag`.
///
/// # Safety
/// `stmt` must be a valid `PlannedStmt` (what `standard_planner` returns).
pub unsafe fn dag_from_plan(stmt: *mut pg_sys::PlannedStmt) -> Result<PlanDag, String> {
    walk(stmt, None).map(|(dag, _)| dag)
}

/// [`dag_from_plan`] and, by node id, the address of the `Plan` each node came from.
///
/// # Safety
/// `stmt` must be a valid `PlannedStmt`.
pub unsafe fn dag_and_plans(
    stmt: *mut pg_sys::PlannedStmt,
) -> Result<(PlanDag, Vec<usize>), String> {
    walk(stmt, None)
}

/// The executed plan with its measured times and rows: each node's self time is its inclusive
/// time minus its inputs' (at least 0; a CTE read twice is subtracted from both readers).
///
/// # Safety
/// `stmt` must be a valid `PlannedStmt`.
pub unsafe fn dag_with_actuals(
    stmt: *mut pg_sys::PlannedStmt,
    measured: &HashMap<usize, Measured>,
) -> Result<PlanDag, String> {
    walk(stmt, Some(measured)).map(|(dag, _)| dag)
}

/// [`dag_with_actuals`] and, by node id, the address of the `Plan` each node came from.
///
/// # Safety
/// `stmt` must be a valid `PlannedStmt`.
pub unsafe fn dag_with_actuals_and_plans(
    stmt: *mut pg_sys::PlannedStmt,
    measured: &HashMap<usize, Measured>,
) -> Result<(PlanDag, Vec<usize>), String> {
    walk(stmt, Some(measured))
}

unsafe fn walk(
    stmt: *mut pg_sys::PlannedStmt,
    measured: Option<&HashMap<usize, Measured>>,
) -> Result<(PlanDag, Vec<usize>), String> {
    if stmt.is_null() || (*stmt).planTree.is_null() {
        return Err("no plan tree".into());
    }
    let mut w = Walker {
        stmt,
        nodes: Vec::new(),
        plans: Vec::new(),
        edges: Vec::new(),
        subplan_roots: HashMap::new(),
        cte_scans: Vec::new(),
        measured,
    };
    w.visit((*stmt).planTree, 0)?;
    for (scan, cte) in std::mem::take(&mut w.cte_scans) {
        if let Some(root) = w.subplan(cte, 0)? {
            if root != scan && !w.edges.contains(&(root, scan)) {
                w.edges.push((root, scan));
            }
        }
    }
    if measured.is_some() {
        let totals: Vec<Option<f64>> = w
            .nodes
            .iter()
            .map(|n| n.actual.map(|a| a.total_ms))
            .collect();
        for &(child, parent) in &w.edges {
            if let (Some(c), Some(a)) = (
                totals[child as usize],
                w.nodes[parent as usize].actual.as_mut(),
            ) {
                a.self_ms -= c;
            }
        }
        for a in w.nodes.iter_mut().filter_map(|n| n.actual.as_mut()) {
            a.self_ms = a.self_ms.max(0.0);
        }
    }
    PlanDag::new(w.nodes, w.edges)
        .map(|dag| (dag, w.plans))
        .map_err(|e| e.to_string())
}

/// Read the instrumentation of every node of an executed plan (InitPlans, CTEs and
/// expression SubPlans included), keyed by the address of its `Plan`.
///
/// # Safety
/// `query_desc` must be a started, not yet ended `QueryDesc`.
pub unsafe fn measure(query_desc: *mut pg_sys::QueryDesc) -> HashMap<usize, Measured> {
    let mut out = HashMap::new();
    walk_state((*query_desc).planstate, &mut out, 0);
    let estate = (*query_desc).estate;
    if !estate.is_null() {
        for ps in ptrs::<pg_sys::PlanState>((*estate).es_subplanstates) {
            walk_state(ps, &mut out, 0);
        }
    }
    out
}

unsafe fn walk_state(ps: *mut pg_sys::PlanState, out: &mut HashMap<usize, Measured>, depth: usize) {
    use pg_sys::NodeTag::*;
    if ps.is_null() || depth > MAX_DEPTH || out.contains_key(&((*ps).plan as usize)) {
        return;
    }
    let instr = (*ps).instrument;
    if !instr.is_null() {
        pg_sys::InstrEndLoop(instr);
        out.insert(
            (*ps).plan as usize,
            Measured {
                total_ms: (*instr).total * 1000.0,
                rows: (*instr).ntuples,
                loops: (*instr).nloops,
            },
        );
    }
    let mut children: Vec<*mut pg_sys::PlanState> = vec![(*ps).lefttree, (*ps).righttree];
    let array = |p: *mut *mut pg_sys::PlanState, n: i32| -> Vec<*mut pg_sys::PlanState> {
        if p.is_null() {
            return Vec::new();
        }
        (0..n.max(0) as usize).map(|i| *p.add(i)).collect()
    };
    match (*ps).type_ {
        T_AppendState => {
            let a = ps as *mut pg_sys::AppendState;
            children.extend(array((*a).appendplans, (*a).as_nplans));
        }
        T_MergeAppendState => {
            let a = ps as *mut pg_sys::MergeAppendState;
            children.extend(array((*a).mergeplans, (*a).ms_nplans));
        }
        T_BitmapAndState => {
            let a = ps as *mut pg_sys::BitmapAndState;
            children.extend(array((*a).bitmapplans, (*a).nplans));
        }
        T_BitmapOrState => {
            let a = ps as *mut pg_sys::BitmapOrState;
            children.extend(array((*a).bitmapplans, (*a).nplans));
        }
        T_SubqueryScanState => children.push((*(ps as *mut pg_sys::SubqueryScanState)).subplan),
        T_CustomScanState => {
            children.extend(ptrs((*(ps as *mut pg_sys::CustomScanState)).custom_ps))
        }
        _ => {}
    }
    for sp in ptrs::<pg_sys::SubPlanState>((*ps).initPlan)
        .into_iter()
        .chain(ptrs::<pg_sys::SubPlanState>((*ps).subPlan))
    {
        if !sp.is_null() {
            children.push((*sp).planstate);
        }
    }
    for c in children {
        walk_state(c, out, depth + 1);
    }
}
