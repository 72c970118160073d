//! Cost accounting: what each node costs by the minute, shared among the
//! pods bound to it ([`allocation`]), recorded by the leader
//! ([`CostRecorder`]) into files of minute-level history
//! ([`CostHistory`]), and grouped into reports ([`build_report`]);
//! project budgets are checked against it ([`BudgetEvaluator`]).
//! docs/cost.md describes the model and the file format.

mod allocation;
mod budget;
mod history;
mod recorder;
mod report;

pub use allocation::{
    CPU_WEIGHT_PER_CORE, MEMORY_WEIGHT_PER_GIB, NodeGroups, NodeMinute, PodMinute, RowKey,
    allocate, minute_cost, split_cost,
};
pub use budget::{BudgetAlert, BudgetEvaluator, apply_cost_budget, delete_project_budget};
pub use history::{CostHistory, CostRows, WindowCost};
pub use recorder::{CostRecorder, RECORDED_MINUTE_KEY};
pub use report::build_report;
