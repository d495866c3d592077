//! A host's use over time, for its graphs: `GET /api/v1/hosts/{name}/usage?range=hour|day`
//! (administrators), from what the host pushes (`observed::host_usage`), so answered by the
//! leader where the pushes arrive.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use stratus_common::usage::{HostUsage, Range};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::User;
use super::{bad_query, Answer, Shared};
use crate::services::Services;

pub fn routes() -> OpenApiRouter<Arc<Services>> {
    OpenApiRouter::new().routes(routes!(host_usage))
}

#[derive(Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(default, deny_unknown_fields)]
struct UsageQuery {
    /// `hour` (every sample, 10 s apart) or `day` (5-minute averages and maxima).
    #[param(inline)]
    range: Range,
}

#[utoipa::path(get, path = "/api/v1/hosts/{name}/usage", tag = "hosts",
    params(("name" = String, Path, description = "The host's name"), UsageQuery),
    responses((status = OK, description = "The host's use over the range, oldest point first", body = HostUsage)))]
async fn host_usage(
    State(services): Shared,
    User(caller): User,
    Path(name): Path<String>,
    query: Result<Query<UsageQuery>, axum::extract::rejection::QueryRejection>,
) -> Answer<Json<HostUsage>> {
    let Query(query) = query.map_err(bad_query)?;
    services.hosts.show(&caller, &name).await?;
    Ok(Json(services.observed.hosts.usage(&name, query.range)))
}
