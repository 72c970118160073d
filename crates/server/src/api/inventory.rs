//! The inventory over HTTP: `/api/v1/clusters`, `/api/v1/pools` and
//! `/api/v1/machineclasses` — list, get, create (POST), update with the
//! `resourceVersion` read (PUT) and delete, each write audited. The same
//! writes back `wharf apply` of the three kinds.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::Value;
use wharf_api::{Cluster, MachineClass, Pool};
use wharf_control::{ControlError, InventoryWrite, Object, Objects};

use super::cluster::list_of;
use super::{ApiCaller, ApiErrorReply, ApiResult, Body as JsonBody};
use crate::AppState;

/// How the routes read, write and delete one inventory kind.
pub(crate) trait InventoryRoute: Object {
    /// The name in audit records and resources (`pool`).
    const NOUN: &'static str;

    /// Stores the object as `how` says; `true` if it was created.
    fn write(
        objects: &Objects,
        object: Self,
        how: InventoryWrite,
    ) -> impl Future<Output = Result<(Self, bool), ControlError>> + Send;

    /// Deletes it unless something still uses it.
    fn remove(
        objects: &Objects,
        name: &str,
    ) -> impl Future<Output = Result<Self, ControlError>> + Send;

    /// Every object as served: pools with their status.
    fn list_served(
        objects: &Objects,
    ) -> impl Future<Output = Result<Vec<Self>, ControlError>> + Send {
        async { Ok(objects.list::<Self>(None, None).await?.0) }
    }

    /// One object as served.
    fn serve(
        objects: &Objects,
        object: Self,
    ) -> impl Future<Output = Result<Self, ControlError>> + Send {
        let _ = objects;
        async { Ok(object) }
    }
}

impl InventoryRoute for Cluster {
    const NOUN: &'static str = "cluster";

    async fn write(
        objects: &Objects,
        object: Self,
        how: InventoryWrite,
    ) -> Result<(Self, bool), ControlError> {
        objects.write_cluster(object, how).await
    }

    async fn remove(objects: &Objects, name: &str) -> Result<Self, ControlError> {
        objects.delete_cluster(name).await
    }
}

impl InventoryRoute for Pool {
    const NOUN: &'static str = "pool";

    async fn write(
        objects: &Objects,
        object: Self,
        how: InventoryWrite,
    ) -> Result<(Self, bool), ControlError> {
        objects.write_pool(object, how).await
    }

    async fn remove(objects: &Objects, name: &str) -> Result<Self, ControlError> {
        objects.delete_pool(name).await
    }

    async fn list_served(objects: &Objects) -> Result<Vec<Self>, ControlError> {
        objects.pools_with_status().await
    }

    async fn serve(objects: &Objects, object: Self) -> Result<Self, ControlError> {
        objects.with_pool_status(object).await
    }
}

impl InventoryRoute for MachineClass {
    const NOUN: &'static str = "machineclass";

    async fn write(
        objects: &Objects,
        object: Self,
        how: InventoryWrite,
    ) -> Result<(Self, bool), ControlError> {
        objects.write_machine_class(object, how).await
    }

    async fn remove(objects: &Objects, name: &str) -> Result<Self, ControlError> {
        objects.delete_machine_class(name).await
    }
}

/// `GET /api/v1/<kind>s`
pub(crate) async fn list<T: InventoryRoute>(
    State(state): State<Arc<AppState>>,
) -> ApiResult<Json<Value>> {
    Ok(list_of(T::list_served(state.control.objects()).await?))
}

/// `GET /api/v1/<kind>s/{name}`
pub(crate) async fn show<T: InventoryRoute>(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<Json<T>> {
    let objects = state.control.objects();
    let object = objects.require::<T>(None, &name).await?;
    Ok(Json(T::serve(objects, object).await?))
}

/// `POST /api/v1/<kind>s` with the object as JSON: creates it.
pub(crate) async fn create<T: InventoryRoute>(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    JsonBody(object): JsonBody<T>,
) -> ApiResult<(StatusCode, Json<T>)> {
    let (stored, _) = write(&state, &caller, object, InventoryWrite::Create).await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// `PUT /api/v1/<kind>s/{name}` with the object as read (its
/// `resourceVersion` set): replaces it unless it changed since.
pub(crate) async fn update<T: InventoryRoute>(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(name): Path<String>,
    JsonBody(object): JsonBody<T>,
) -> ApiResult<Json<T>> {
    if object.metadata().name != name {
        return Err(ApiErrorReply::invalid(format!(
            "metadata.name {} is not {name}, the {} in the path",
            object.metadata().name,
            T::NOUN
        )));
    }
    let (stored, _) = write(&state, &caller, object, InventoryWrite::Update).await?;
    Ok(Json(stored))
}

/// Writes `object` as `how` says, audited as `<noun>.create|update|apply`;
/// `true` if it was created.
pub(crate) async fn write<T: InventoryRoute>(
    state: &AppState,
    caller: &ApiCaller,
    object: T,
    how: InventoryWrite,
) -> ApiResult<(T, bool)> {
    let verb = match how {
        InventoryWrite::Create => "create",
        InventoryWrite::Update => "update",
        InventoryWrite::Apply => "apply",
    };
    let action = format!("{}.{verb}", T::NOUN);
    let resource = format!("{}/{}", T::NOUN, object.metadata().name);
    let work = T::write(state.control.objects(), object, how);
    state.audited(caller, &action, resource, work).await
}

/// `DELETE /api/v1/<kind>s/{name}`: refused, with the reason, while
/// something uses it.
pub(crate) async fn remove<T: InventoryRoute>(
    State(state): State<Arc<AppState>>,
    Extension(caller): Extension<ApiCaller>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let action = format!("{}.delete", T::NOUN);
    let resource = format!("{}/{name}", T::NOUN);
    let work = T::remove(state.control.objects(), &name);
    state.audited(&caller, &action, resource, work).await?;
    Ok(StatusCode::NO_CONTENT)
}
