//! One view of a request, whichever API it came from (issuer-lib's `request_objecthelper_*`):
//! the [`RequestView`] the decisions read and that builds the adapter's [`SignRequest`], the
//! [`IssuerTarget`] a request names, and the per-request state annotation prefix. Each request API
//! builds its view in its own file under `controllers/request/`.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::issuer::IssuerScope;
use crate::pki::{Csr, CsrLimits};
use crate::request::{RequestKind, RequestObject, Requester, SignRequest, resolve_usages};

/// A condition as read from an object (either API).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Cond {
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: Option<Timestamp>,
}

/// The issuer a request names, once it matched one of our kinds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct IssuerTarget {
    pub scope: IssuerScope,
    pub name: String,
    /// The issuer's namespace (namespaced kind only).
    pub namespace: Option<String>,
}

/// The normalized request.
#[derive(Debug, Clone)]
pub(crate) struct RequestView {
    /// Which API it came from (never `CommandLine`: the offline CLI builds no view).
    pub kind: RequestKind,
    pub name: String,
    pub namespace: Option<String>,
    pub uid: String,
    pub created: Option<Timestamp>,
    pub annotations: BTreeMap<String, String>,
    pub conditions: Vec<Cond>,
    /// CSR: `status.certificate` is set; CR: `status.certificate` is set.
    pub has_certificate: bool,
    pub csr_pem: Vec<u8>,
    pub duration: Result<Duration, String>,
    pub is_ca: bool,
    pub usages: Vec<String>,
    pub requester: Requester,
}

impl RequestView {
    /// The API's kind name, used in messages and labels.
    pub(crate) fn kind_name(&self) -> &'static str {
        match self.kind {
            RequestKind::CertificateRequest => "CertificateRequest",
            RequestKind::CertificateSigningRequest => "CertificateSigningRequest",
            RequestKind::CommandLine => "CommandLine",
        }
    }

    /// The condition of type `t`.
    pub(crate) fn condition(&self, t: &str) -> Option<&Cond> {
        self.conditions.iter().find(|c| c.type_ == t)
    }

    /// Whether condition `t` is `True`.
    pub(crate) fn is_true(&self, t: &str) -> bool {
        self.condition(t).is_some_and(|c| c.status == "True")
    }

    /// `namespace/name` or `name`.
    pub(crate) fn display_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }

    /// The per-request state map stored in annotations `state.<group>/<key>`.
    pub(crate) fn state(&self, group: &str) -> BTreeMap<String, String> {
        let prefix = state_prefix(group);
        self.annotations
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|key| (key.to_owned(), v.clone())))
            .collect()
    }

    /// [`RequestView::sign_request_within`] the default limits.
    #[cfg(test)]
    pub(crate) fn sign_request(&self) -> Result<SignRequest, String> {
        self.sign_request_within(&CsrLimits::default())
    }

    /// The adapter's request: CSR parsed within `limits` (the `--csr-max-*` flags) and verified,
    /// usage defaults applied and checked against what the CSR embeds. The error says what is
    /// wrong, fit for a Failed condition.
    pub(crate) fn sign_request_within(&self, limits: &CsrLimits) -> Result<SignRequest, String> {
        let duration = self.duration.clone()?;
        let csr_pem = String::from_utf8(self.csr_pem.clone())
            .map_err(|_| "spec.request is not PEM text: the CSR is not valid PEM".to_owned())?;
        let csr = Csr::from_pem_with_limits(&csr_pem, limits)?;
        let (key_usages, ext_key_usages) = resolve_usages(&self.usages, self.is_ca)?;
        csr.check_consistent(self.is_ca, &key_usages, &ext_key_usages)?;
        Ok(SignRequest {
            csr_pem,
            csr,
            duration,
            is_ca: self.is_ca,
            key_usages,
            ext_key_usages,
            requester: self.requester.clone(),
            object: RequestObject {
                kind: self.kind,
                name: self.name.clone(),
                namespace: self.namespace.clone(),
                uid: self.uid.clone(),
                annotations: self.annotations.clone(),
            },
        })
    }
}

/// `state.<group>/`, the annotation prefix of the per-request state.
pub(crate) fn state_prefix(group: &str) -> String {
    format!("state.{group}/")
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
