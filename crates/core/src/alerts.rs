//! Alerts as the API shows them.

use serde::{Deserialize, Serialize};

/// An alert berth raised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertView {
    pub id: String,
    pub app: String,
    /// What it is about, e.g. `slo_availability`.
    pub name: String,
    /// `page` or `ticket`.
    pub severity: String,
    pub summary: String,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds; `None` while it fires.
    pub resolved_at: Option<i64>,
}
