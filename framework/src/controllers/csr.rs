//! The Kubernetes `CertificateSigningRequest` as the request controller sees it: signer names
//! `<plural>.<group>/<name>` of the cluster-scoped kind only.

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::Api;

use crate::controllers::request_controller::RequestApi;
use crate::controllers::shared::Kinds;
use crate::controllers::view::{IssuerTarget, RequestView, csr_target};

impl RequestApi for CertificateSigningRequest {
    const CONTROLLER: &'static str = "certificatesigningrequests";
    const NAMES_NAMESPACED_ISSUERS: bool = false;

    /// CSRs are cluster-scoped: `--namespace` does not apply.
    fn watch_api(client: &kube::Client, _namespace: Option<&str>) -> Api<Self> {
        Api::all(client.clone())
    }

    fn object_api(&self, client: &kube::Client) -> Api<Self> {
        Api::all(client.clone())
    }

    fn view(&self) -> RequestView {
        RequestView::from_csr(self)
    }

    fn target(&self, kinds: &Kinds) -> Result<Option<IssuerTarget>, String> {
        let signer = &self.spec.signer_name;
        csr_target(signer, &kinds.namespaced.names, &kinds.cluster.names)
            .map_err(|why| format!("signer {signer}: {why}"))
    }

    /// Issued. (A Failed or Denied CSR an issuer change wakes is sorted out by the gate.)
    fn finished(&self) -> bool {
        self.status.as_ref().and_then(|s| s.certificate.as_ref()).is_some_and(|c| !c.0.is_empty())
    }
}
