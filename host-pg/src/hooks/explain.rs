//! EXPLAIN shows the decision: two lines after the plan in text format (PostgreSQL 15 and
//! 16); on 17 and 18 see `explain18`.

use super::*;

pub(super) fn append(es: *mut pg_sys::ExplainState, line: &str) {
    let text = CString::new(line.replace('\0', " ")).unwrap_or_default();
    // SAFETY: es->str is the EXPLAIN output buffer.
    unsafe { pg_sys::appendStringInfoString((*es).str_, text.as_ptr()) };
}

#[pg_guard]
pub(super) unsafe extern "C-unwind" fn explain_hook(
    query: *mut pg_sys::Query,
    cursor_options: i32,
    into: *mut pg_sys::IntoClause,
    es: *mut pg_sys::ExplainState,
    query_string: *const std::ffi::c_char,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
) {
    BACKEND.with(|b| b.borrow_mut().last_explained = None);
    #[cfg(feature = "pg18")]
    explain18::forget_weights();
    if let Some(prev) = PREV_EXPLAIN {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            prev(
                query,
                cursor_options,
                into,
                es,
                query_string,
                params,
                query_env,
            )
        });
    } else {
        crate::compat::standard_explain_one_query(
            query,
            cursor_options,
            into,
            es,
            query_string,
            params,
            query_env,
        );
    }
    if crate::compat::STRUCTURED_EXPLAIN {
        // PostgreSQL 18 printed it from explain_per_plan_hook, in every format.
        return;
    }
    let Some((_, d, arm_ran)) = BACKEND.with(|b| b.borrow_mut().last_explained.take()) else {
        return;
    };
    if (*es).format != pg_sys::ExplainFormat::EXPLAIN_FORMAT_TEXT {
        return;
    }
    for line in Shown::of(&d, arm_ran).text() {
        append(es, &line);
    }
}

/// A decision as EXPLAIN shows it.
pub(super) struct Shown {
    pub(super) arm: String,
    pub(super) applied: String,
    pub(super) rule: &'static str,
    pub(super) pattern: String,
    pub(super) similarity: f32,
    pub(super) confidence: f32,
    pub(super) attention: String,
    pub(super) predicted_ms: f32,
    pub(super) reason: String,
}

impl Shown {
    pub(super) fn of(d: &Decision, arm_ran: u8) -> Shown {
        // A lean decision (what every statement gets, EXPLAINed or not) with its model's view
        // computed now, outside the statement's planning time. Without it (the learned state
        // failed to load, or the view failed: counted in status) the view is shown as none.
        let viewed;
        let d = match &d.default_plan {
            Some(dag) if !d.model_view => {
                let mut v = d.clone();
                let filled = learning_path("the model's view", || {
                    with_optimizer(|o| o.fill_model_view(&mut v, dag))
                        .map_err(|e| ("loading the learned state", e))?
                        .map_err(|e| ("the model's view", e.to_string()))
                });
                viewed = v;
                if filled.is_ok() {
                    &viewed
                } else {
                    d
                }
            }
            _ => d,
        };
        // The parsed arm list is shared (parsed once per setting text), not copied.
        let arm = guc::arms_shared()
            .ok()
            .and_then(|(arms, _)| arms.get(usize::from(d.arm)).map(|x| x.0.clone()))
            .unwrap_or_else(|| format!("arm {}", d.arm));
        let applied = if d.arm == 0 {
            "the default plan".to_string()
        } else if arm_ran == d.arm {
            "applied".to_string()
        } else {
            format!("advice only, mode {}", guc::mode().name())
        };
        let attention = match d.attention {
            ruvector_dag_core::AttentionKind::Plugin(id) => format!(
                "{}{}",
                crate::plugins::PREFIX,
                crate::plugins::planner_name(id).unwrap_or_else(|| id.to_string())
            ),
            k => k.name().to_string(),
        };
        Shown {
            arm,
            applied,
            rule: d.rule.name(),
            pattern: d
                .pattern
                .map_or_else(|| "none".to_string(), |p| p.to_string()),
            similarity: d.similarity,
            confidence: d.confidence,
            attention,
            predicted_ms: d.predicted_ms,
            reason: d.reason.clone(),
        }
    }

    /// The two lines of the text format.
    pub(super) fn text(&self) -> [String; 2] {
        [
            format!(
                "ruvector_dag: arm '{}' ({}; rule {}), pattern {}, similarity {:.3}, confidence {:.3}, attention {}, predicted {:.3} ms\n",
                self.arm,
                self.applied,
                self.rule,
                self.pattern,
                self.similarity,
                self.confidence,
                self.attention,
                self.predicted_ms
            ),
            format!("ruvector_dag reason: {}\n", self.reason),
        ]
    }
}
