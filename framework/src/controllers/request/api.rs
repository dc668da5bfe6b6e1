//! What differs between the request APIs the controller serves: the [`RequestApi`] trait.
//! `certificate_request.rs` and `csr.rs` implement it, one file per API.

use std::fmt::Debug;

use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::controllers::decision::request::Outcome;
use crate::controllers::prune::Prune;
use crate::controllers::shared::Kinds;
use crate::controllers::view::{IssuerTarget, RequestView};
use crate::controllers::watch_decode::WithoutManagedFields;

/// A request API the controller serves.
pub(crate) trait RequestApi:
    kube::Resource<DynamicType = ()> + Prune + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    /// The controller's name in spans and metrics.
    const CONTROLLER: &'static str;
    /// Whether a request of this API can name the namespaced issuer kind (Kubernetes CSRs cannot,
    /// so their controller does not watch that kind at all).
    const NAMES_NAMESPACED_ISSUERS: bool;

    /// The API to watch, decoding without managedFields; `namespace` (`--namespace`) limits a
    /// namespaced resource to one namespace.
    fn watch_api(client: &kube::Client, namespace: Option<&str>) -> Api<WithoutManagedFields<Self>>;
    /// The API serving this object (where the signer's state annotations are saved).
    fn object_api(&self, client: &kube::Client) -> Api<Self>;
    /// The normalized view the decisions read.
    fn view(&self) -> RequestView;
    /// The issuer of ours this request names: `Ok(None)` when it names someone else's, `Err(why)`
    /// when it looks like ours but can never be served.
    fn target(&self, kinds: &Kinds) -> Result<Option<IssuerTarget>, String>;
    /// Issued or failed for good: an issuer becoming ready no longer concerns it.
    fn finished(&self) -> bool;
    /// The status apply body after `outcome` (only the fields this pass sets; see `ssa`), or
    /// `None` when this API writes nothing for it.
    fn status_body(view: &RequestView, outcome: &Outcome, now: Timestamp) -> Option<Value>;
}
