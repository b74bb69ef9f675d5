//! PostgreSQL 18's EXPLAIN extension points: the decision as a `ruvector_dag` group in every
//! format (`explain_per_plan_hook`), each operator's attention weight on request
//! (`explain_per_node_hook`), and the EXPLAIN options `ruvector_dag` (default on; off hides
//! the decision) and `ruvector_dag_weights` (default off).
use super::*;
use std::ffi::CStr;

static mut PREV_PER_PLAN: pg_sys::explain_per_plan_hook_type = None;
static mut PREV_PER_NODE: pg_sys::explain_per_node_hook_type = None;
static mut EXTENSION_ID: i32 = -1;

/// The EXPLAIN being printed (its `ExplainState` and `PlannedStmt` addresses) and its
/// operators' weights by `Plan` address (for `ruvector_dag_weights`).
type Weights = ((usize, usize), std::collections::HashMap<usize, f64>);

thread_local! {
    static WEIGHTS: RefCell<Option<Weights>> = const { RefCell::new(None) };
}

/// Forget the weights of an EXPLAIN (also when one ended in an error before its per-plan
/// hook ran: the next EXPLAIN must not reuse them).
pub fn forget_weights() {
    WEIGHTS.with(|w| *w.borrow_mut() = None);
}

/// The options of one EXPLAIN, kept in its `ExplainState`.
#[repr(C)]
struct Options {
    hide: bool,
    weights: bool,
}

/// Register the EXPLAIN options (from `_PG_init`, preloaded or not, so that statements
/// naming them parse either way).
pub fn register_options() {
    // SAFETY: backend-local registrations, made once while loading the library.
    unsafe {
        EXTENSION_ID = pg_sys::GetExplainExtensionId(c"ruvector_dag".as_ptr());
        pg_sys::RegisterExtensionExplainOption(c"ruvector_dag".as_ptr(), Some(option));
        pg_sys::RegisterExtensionExplainOption(c"ruvector_dag_weights".as_ptr(), Some(option));
    }
}

/// Install the per-plan and per-node hooks (from `hooks::install`).
pub fn install() {
    // SAFETY: _PG_init runs once per process, before any query.
    unsafe {
        PREV_PER_PLAN = pg_sys::explain_per_plan_hook;
        pg_sys::explain_per_plan_hook = Some(per_plan);
        PREV_PER_NODE = pg_sys::explain_per_node_hook;
        pg_sys::explain_per_node_hook = Some(per_node);
    }
}

unsafe fn options(es: *mut pg_sys::ExplainState) -> Option<&'static Options> {
    if EXTENSION_ID < 0 {
        return None;
    }
    (pg_sys::GetExplainExtensionState(es, EXTENSION_ID) as *const Options).as_ref()
}

#[pg_guard]
unsafe extern "C-unwind" fn option(
    es: *mut pg_sys::ExplainState,
    opt: *mut pg_sys::DefElem,
    _pstate: *mut pg_sys::ParseState,
) {
    let mut o = pg_sys::GetExplainExtensionState(es, EXTENSION_ID) as *mut Options;
    if o.is_null() {
        o = pg_sys::palloc0(std::mem::size_of::<Options>()) as *mut Options;
        pg_sys::SetExplainExtensionState(es, EXTENSION_ID, o.cast());
    }
    let on = pg_sys::defGetBoolean(opt);
    if CStr::from_ptr((*opt).defname).to_bytes() == b"ruvector_dag" {
        (*o).hide = !on;
    } else {
        (*o).weights = on;
    }
}

fn text(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

#[pg_guard]
unsafe extern "C-unwind" fn per_plan(
    stmt: *mut pg_sys::PlannedStmt,
    into: *mut pg_sys::IntoClause,
    es: *mut pg_sys::ExplainState,
    query_string: *const std::ffi::c_char,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
) {
    if let Some(prev) = PREV_PER_PLAN {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            prev(stmt, into, es, query_string, params, query_env)
        });
    }
    forget_weights();
    if options(es).is_some_and(|o| o.hide) {
        return;
    }
    // Only the decision made for this very plan.
    let Some((d, arm_ran)) = BACKEND.with(|b| {
        b.borrow()
            .last_explained
            .as_ref()
            .filter(|(s, _, _)| *s == stmt as usize)
            .map(|(_, d, a)| (Rc::clone(d), *a))
    }) else {
        return;
    };
    let shown = Shown::of(&d, arm_ran);
    if (*es).format == pg_sys::ExplainFormat::EXPLAIN_FORMAT_TEXT {
        for line in shown.text() {
            append(es, &line);
        }
        return;
    }
    let group = c"ruvector_dag".as_ptr();
    pg_sys::ExplainOpenGroup(group, group, true, es);
    let put = |label: &CStr, value: &str| {
        let v = text(value);
        pg_sys::ExplainPropertyText(label.as_ptr(), v.as_ptr(), es);
    };
    put(c"Arm", &shown.arm);
    put(c"Applied", &shown.applied);
    put(c"Rule", shown.rule);
    put(c"Pattern", &shown.pattern);
    pg_sys::ExplainPropertyFloat(
        c"Similarity".as_ptr(),
        std::ptr::null(),
        f64::from(shown.similarity),
        3,
        es,
    );
    pg_sys::ExplainPropertyFloat(
        c"Confidence".as_ptr(),
        std::ptr::null(),
        f64::from(shown.confidence),
        3,
        es,
    );
    put(c"Attention", &shown.attention);
    pg_sys::ExplainPropertyFloat(
        c"Predicted Time".as_ptr(),
        c"ms".as_ptr(),
        f64::from(shown.predicted_ms),
        3,
        es,
    );
    put(c"Reason", &shown.reason);
    pg_sys::ExplainCloseGroup(group, group, true, es);
}

#[pg_guard]
unsafe extern "C-unwind" fn per_node(
    planstate: *mut pg_sys::PlanState,
    ancestors: *mut pg_sys::List,
    relationship: *const std::ffi::c_char,
    plan_name: *const std::ffi::c_char,
    es: *mut pg_sys::ExplainState,
) {
    if let Some(prev) = PREV_PER_NODE {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            prev(planstate, ancestors, relationship, plan_name, es)
        });
    }
    if !options(es).is_some_and(|o| o.weights) || planstate.is_null() {
        return;
    }
    let stmt = (*(*planstate).state).es_plannedstmt;
    let plan = (*planstate).plan as usize;
    let key = (es as usize, stmt as usize);
    let fresh = WEIGHTS.with(|w| w.borrow().as_ref().is_some_and(|(k, _)| *k == key));
    if !fresh {
        let dag = crate::plantree::dag_and_plans(stmt).unwrap_or_else(|e| {
            crate::fail(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("ruvector_dag_weights: reading the plan: {e}"),
            )
        });
        let (dag, plans) = dag;
        let alpha = crate::analyze::weights_under_setting(&dag);
        let map = plans
            .into_iter()
            .zip(alpha)
            .map(|(p, w)| (p, f64::from(w)))
            .collect();
        WEIGHTS.with(|w| *w.borrow_mut() = Some((key, map)));
    }
    if let Some(w) = WEIGHTS.with(|w| w.borrow().as_ref().and_then(|(_, m)| m.get(&plan).copied()))
    {
        pg_sys::ExplainPropertyFloat(
            c"ruvector_dag Attention".as_ptr(),
            std::ptr::null(),
            w,
            4,
            es,
        );
    }
}
