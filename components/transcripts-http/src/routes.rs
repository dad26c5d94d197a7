//! The routes under `/api/v1/meetings/` (spin.toml sends the whole prefix here): which one a
//! path names, and for which meeting. Methods are checked by each route.

use earshot_protocol::transcript::INTAKE_PATH_PREFIX;
use earshot_protocol::MeetingId;

use crate::api::ApiError;

/// A route of this component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/api/v1/meetings/{id}`: DELETE.
    Meeting(MeetingId),
    /// `/api/v1/meetings/{id}/transcript`: POST (intake), GET (export).
    Transcript(MeetingId),
    /// `/api/v1/meetings/{id}/end`: POST (meeting end).
    End(MeetingId),
}

/// The route `path` names (one trailing slash tolerated): 404 for no route, 400 for a
/// route whose meeting id breaks the grammar.
pub(crate) fn parse(path: &str) -> Result<Route, ApiError> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let rest = path.strip_prefix(INTAKE_PATH_PREFIX).ok_or(ApiError::NotFound)?;
    let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let route: fn(MeetingId) -> Route = match tail {
        "" => Route::Meeting,
        "transcript" => Route::Transcript,
        "end" => Route::End,
        _ => return Err(ApiError::NotFound),
    };
    MeetingId::parse(id)
        .map(route)
        .map_err(|_| ApiError::BadRequest("invalid meeting id".into()))
}
