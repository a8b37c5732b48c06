//! One ACME order from start to the files in the store, and the account it is made with.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, ExternalAccountKey,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::challenges::Challenges;
use super::lease;
use crate::config::{AcmeSettings, KeyType};

/// Why an order did not end with a certificate in the store.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The CA refused or failed a step (its problem document, or the transport's error
    /// with every cause).
    #[error("{step}: {}", super::causes(error))]
    Acme {
        step: &'static str,
        error: instant_acme::Error,
    },
    /// The CA could not validate the name (the challenge failed).
    #[error("{0}")]
    Invalid(String),
    /// Local trouble: state_dir or the store cannot be written, a key cannot be made.
    #[error("{0}")]
    Local(String),
    /// The order ran past its bound.
    #[error("no certificate within {0:?}")]
    Timeout(Duration),
    /// The store did not install the certificate (its checks refused it, or `acme/NAME/`
    /// is not ACME's): nothing was written, and the version before keeps serving.
    #[error("the certificate issued was not installed: {0}; the version before keeps serving")]
    NotInstalled(String),
    /// What serves the name outranks the certificate issued (the operator's own, say):
    /// not installed, and not a failure.
    #[error("{0}")]
    Outranked(String),
}

impl OrderError {
    fn acme(step: &'static str) -> impl FnOnce(instant_acme::Error) -> Self {
        move |error| Self::Acme { step, error }
    }
}

/// The challenge kinds this configuration can answer, in preference order.
#[derive(Debug, Clone, Copy)]
pub struct Answers {
    /// An https listener exists: tls-alpn-01.
    pub tls_alpn: bool,
    /// An http listener exists: http-01.
    pub http: bool,
}

/// The lock taken to create the account: not a host name, so no name's lock is it.
const ACCOUNT_LOCK: &str = ".account";

/// The account, created once and kept in `state_dir/accounts/HOST.json` (0600).
pub async fn account(settings: &AcmeSettings) -> Result<Account, OrderError> {
    let local = |what: &str, e: &dyn std::fmt::Display| OrderError::Local(format!("{what}: {e}"));
    let dir = settings.state_dir.join("accounts");
    let path = dir.join(format!("{}.json", directory_host(&settings.directory)));
    let builder = || -> Result<_, OrderError> {
        match &settings.ca_bundle {
            Some(bundle) => Ok(Account::builder_with_http(Box::new(http_client(bundle)?))),
            None => Account::builder().map_err(OrderError::acme("the system's roots")),
        }
    };
    if let Some(credentials) = read_credentials(&path)? {
        return builder()?
            .from_credentials(credentials)
            .await
            .map_err(OrderError::acme("the ACME directory"));
    }
    // One instance of a fleet creates it; the others wait for its file.
    let locks = settings.state_dir.join("locks");
    let mut waited = Duration::ZERO;
    let lease = loop {
        if let Some(lease) = lease::acquire(&locks, ACCOUNT_LOCK)
            .await
            .map_err(|e| local(&format!("{}", locks.display()), &e))?
        {
            break lease;
        }
        if waited > Duration::from_secs(60) {
            return Err(OrderError::Local(format!(
                "{}: another instance holds the account lock",
                locks.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        waited += Duration::from_millis(500);
        if let Some(credentials) = read_credentials(&path)? {
            return builder()?
                .from_credentials(credentials)
                .await
                .map_err(OrderError::acme("the ACME directory"));
        }
    };
    if let Some(credentials) = read_credentials(&path)? {
        drop(lease);
        return builder()?
            .from_credentials(credentials)
            .await
            .map_err(OrderError::acme("the ACME directory"));
    }
    let eab = match &settings.eab {
        Some((kid, file)) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| local(&format!("acme.eab_hmac_key_file {}", file.display()), &e))?;
            use base64::Engine;
            let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text.trim().trim_end_matches('='))
                .map_err(|e| {
                    local(
                        &format!("acme.eab_hmac_key_file {} is not base64url", file.display()),
                        &e,
                    )
                })?;
            Some(ExternalAccountKey::new(kid.clone(), &key))
        }
        None => None,
    };
    let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            settings.directory.clone(),
            eab.as_ref(),
        )
        .await
        .map_err(OrderError::acme("creating the account"))?;
    let json = serde_json::to_vec_pretty(&credentials).map_err(|e| local("account", &e))?;
    write_private(&dir, &path, &json).map_err(|e| local(&path.display().to_string(), &e))?;
    tracing::info!(account = account.id(), file = %path.display(), "ACME account created");
    drop(lease);
    Ok(account)
}

fn read_credentials(path: &Path) -> Result<Option<AccountCredentials>, OrderError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            OrderError::Local(format!(
                "{} is not an account file ({e}); move it away to create a new account",
                path.display()
            ))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(OrderError::Local(format!("{}: {e}", path.display()))),
    }
}

/// `acme-v02.api.letsencrypt.org` for its directory URL: one account per CA.
fn directory_host(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.split('/').next().unwrap_or("ca");
    host.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// An HTTP client for the ACME API trusting the roots in `bundle`.
fn http_client(
    bundle: &Path,
) -> Result<
    hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        instant_acme::BodyWrapper<bytes::Bytes>,
    >,
    OrderError,
> {
    let config = super::client_config(Some(bundle)).map_err(OrderError::Local)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}

/// A certificate the CA issued, as written.
#[derive(Debug)]
pub struct Issued {
    pub not_before: i64,
    pub not_after: i64,
    /// The leaf, DER.
    pub leaf: Vec<u8>,
}

/// Orders a certificate for `name`: what the CA issued, its chain and the key (PEM),
/// for the store to install.
pub async fn issue(
    account: &Account,
    settings: &AcmeSettings,
    answers: Answers,
    challenges: &Challenges,
    name: &str,
    replaces: Option<instant_acme::CertificateIdentifier<'static>>,
) -> Result<(Issued, String, String), OrderError> {
    let identifiers = [Identifier::Dns(name.to_owned())];
    let mut new = NewOrder::new(&identifiers);
    if let Some(replaces) = replaces {
        new = new.replaces(replaces);
    }
    if let Some(profile) = &settings.profile {
        new = new.profile(profile);
    }
    let mut order = account
        .new_order(&new)
        .await
        .map_err(OrderError::acme("new order"))?;
    let mut published: Vec<Option<String>> = Vec::new();
    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(OrderError::acme("authorization"))?;
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(OrderError::Invalid(format!(
                        "the CA's authorization is {other:?}"
                    )))
                }
            }
            let kinds = [
                (answers.tls_alpn, ChallengeType::TlsAlpn01),
                (answers.http, ChallengeType::Http01),
            ];
            let Some(kind) = kinds
                .into_iter()
                .filter(|(usable, _)| *usable)
                .map(|(_, kind)| kind)
                .find(|kind| authz.challenges.iter().any(|c| c.r#type == *kind))
            else {
                return Err(OrderError::Invalid(
                    "the CA offers no challenge this configuration answers (tls-alpn-01 \
                     needs an https listener, http-01 an http one)"
                        .into(),
                ));
            };
            let Some(mut challenge) = authz.challenge(kind.clone()) else {
                continue;
            };
            let key_authorization = challenge.key_authorization();
            let answer = key_authorization.as_str();
            let local = |e: io::Error| OrderError::Local(format!("publishing the challenge: {e}"));
            if kind == ChallengeType::TlsAlpn01 {
                challenges.publish_tls(name, answer).map_err(local)?;
                published.push(None);
            } else {
                challenges
                    .publish_http(&challenge.token, answer)
                    .map_err(local)?;
                published.push(Some(challenge.token.clone()));
            }
            challenge
                .set_ready()
                .await
                .map_err(OrderError::acme("challenge ready"))?;
        }
        let polling = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(Duration::from_secs(120));
        let status = order
            .poll_ready(&polling)
            .await
            .map_err(OrderError::acme("waiting for validation"))?;
        if status != OrderStatus::Ready {
            return Err(OrderError::Invalid(invalid_reason(&mut order).await));
        }
        let (key_pem, csr) = key_and_csr(settings.key_type, name)?;
        order
            .finalize_csr(&csr)
            .await
            .map_err(OrderError::acme("finalize"))?;
        let chain = order
            .poll_certificate(&polling)
            .await
            .map_err(OrderError::acme("downloading the certificate"))?;
        Ok((key_pem, chain))
    }
    .await;
    for token in &published {
        challenges.withdraw(name, token.as_deref());
    }
    let (key_pem, chain) = result?;
    let issued = validity(&chain)?;
    Ok((issued, chain, key_pem))
}

/// What the CA said of a failed validation.
async fn invalid_reason(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for c in &authz.challenges {
            if let Some(error) = &c.error {
                reasons.push(format!("{:?}: {error}", c.r#type));
            }
        }
    }
    if reasons.is_empty() {
        "the CA did not validate the name".into()
    } else {
        format!("the CA did not validate the name: {}", reasons.join("; "))
    }
}

/// A new key and the CSR for `name`.
fn key_and_csr(kind: KeyType, name: &str) -> Result<(String, Vec<u8>), OrderError> {
    let local = |e: rcgen::Error| OrderError::Local(format!("making the key and CSR: {e}"));
    let alg = match kind {
        KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyType::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
    };
    let key = match kind {
        KeyType::EcdsaP256 => rcgen::KeyPair::generate_for(alg).map_err(local)?,
        KeyType::Rsa2048 => {
            let der = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .and_then(|k| {
                    aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&k)
                })
                .map_err(|e| OrderError::Local(format!("making an RSA key: {e}")))?;
            let der = rustls::pki_types::PrivatePkcs8KeyDer::from(der.as_ref().to_vec());
            rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, alg).map_err(local)?
        }
    };
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(local)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(local)?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

pub(super) fn validity(chain: &str) -> Result<Issued, OrderError> {
    let leaf = CertificateDer::pem_slice_iter(chain.as_bytes())
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| OrderError::Local("the CA sent no certificate".into()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| OrderError::Local(format!("the CA's certificate does not parse: {e}")))?;
    Ok(Issued {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        leaf: leaf.to_vec(),
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn write_private(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mut file = tempfile::Builder::new()
        .prefix(".account")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Shared with the manager: the account, made at the first order.
pub type SharedAccount = Arc<tokio::sync::OnceCell<Account>>;
