//! The cert-manager `CertificateRequest` as the request controller sees it.

use kube::api::Api;

use crate::api::CertificateRequest;
use crate::controllers::request_controller::RequestApi;
use crate::controllers::shared::Kinds;
use crate::controllers::view::{IssuerTarget, RequestView, certificate_request_target};
use crate::controllers::watch;

impl RequestApi for CertificateRequest {
    const CONTROLLER: &'static str = "certificaterequests";
    const NAMES_NAMESPACED_ISSUERS: bool = true;

    fn watch_api(client: &kube::Client, namespace: Option<&str>) -> Api<Self> {
        watch::api(client, namespace)
    }

    fn object_api(&self, client: &kube::Client) -> Api<Self> {
        Api::namespaced(client.clone(), self.metadata.namespace.as_deref().unwrap_or_default())
    }

    fn view(&self) -> RequestView {
        RequestView::from_certificate_request(self)
    }

    fn target(&self, kinds: &Kinds) -> Result<Option<IssuerTarget>, String> {
        Ok(certificate_request_target(self, &kinds.namespaced.names, &kinds.cluster.names))
    }

    /// Ready or Failed. (Other requests an issuer change wakes are sorted out by the gate.)
    fn finished(&self) -> bool {
        self.condition("Ready").is_some_and(|c| c.status == "True" || c.reason.as_deref() == Some("Failed"))
    }
}
