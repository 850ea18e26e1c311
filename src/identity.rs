//! Identity: bearer tokens and the caller they identify.
//!
//! A token reads `slc.<token id>.<secret>`. The id finds the stored record without scanning; the
//! secret (32 random bytes) is stored only as its SHA-256 and compared in constant time. A plain
//! hash is the right tool here: the secret has 256 bits of entropy, so a slow password hash would
//! add latency to every request without adding safety.

use base64::Engine;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

use crate::model::{CompanyId, GroupId, TokenId, UserId, UserKind};
use crate::permission::Principal;
use crate::store::{CompanyView, Token, User, View};

const PREFIX: &str = "slc";

/// A freshly minted token: the plain text (shown once) and what is stored.
pub struct Minted {
    pub plain: String,
    pub token: Token,
}

pub fn mint(
    user_id: &UserId,
    company_id: &CompanyId,
    name: Option<String>,
    now: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
) -> Minted {
    let id = TokenId::generate();
    let secret: [u8; 32] = rand::random();
    let secret_text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let plain = format!("{PREFIX}.{}.{}", id.as_str(), secret_text);
    Minted {
        plain,
        token: Token {
            id,
            user_id: user_id.clone(),
            company_id: company_id.clone(),
            name,
            hash: hash_secret(&secret_text),
            created_at: now,
            expires_at,
        },
    }
}

fn hash_secret(secret_text: &str) -> [u8; 32] {
    Sha256::digest(secret_text.as_bytes()).into()
}

/// Why a bearer token was not accepted. The client sees one answer for all of them (401), so a
/// probe cannot tell a wrong secret from an unknown id; the variants are for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("unknown token")]
    Unknown,
    #[error("expired token")]
    Expired,
}

impl crate::code::Coded for AuthError {
    fn code(&self) -> crate::code::Code {
        crate::code::Code::Unauthenticated
    }

    /// Why a token was refused stays in the log: a client learns nothing from the difference.
    fn message(&self) -> String {
        "a valid bearer token is required".into()
    }
}

/// The authenticated caller of one request, with the company snapshot the request works on.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user: User,
    pub token_id: TokenId,
    pub company: Arc<CompanyView>,
}

impl Caller {
    pub fn principal(&self) -> Principal<'_> {
        Principal {
            user_id: &self.user.id,
            kind: self.user.kind,
            company_role: self.user.role,
            groups: self.groups(),
        }
    }

    pub fn groups(&self) -> &[GroupId] {
        self.company.groups_of(&self.user.id)
    }

    pub fn is_api(&self) -> bool {
        self.user.kind == UserKind::Api
    }
}

/// Resolves `Authorization` header text to a caller using only the in-memory view.
pub fn authenticate(
    view: &View,
    header: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Caller, AuthError> {
    let header = header.ok_or(AuthError::Missing)?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or(AuthError::Malformed)?
        .trim();
    let mut parts = token.splitn(3, '.');
    let (Some(prefix), Some(id), Some(secret)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(AuthError::Malformed);
    };
    if prefix != PREFIX || !id.starts_with(TokenId::PREFIX) || secret.len() > 64 {
        return Err(AuthError::Malformed);
    }
    let id = TokenId(id.to_owned());
    let company_id = view.token_company.get(&id).ok_or(AuthError::Unknown)?;
    let company = view.company(company_id).ok_or(AuthError::Unknown)?;
    let stored = company.tokens.get(&id).ok_or(AuthError::Unknown)?;
    let presented = hash_secret(secret);
    if !bool::from(presented.ct_eq(&stored.hash)) {
        return Err(AuthError::Unknown);
    }
    if stored.expires_at.is_some_and(|e| e <= now) {
        return Err(AuthError::Expired);
    }
    let user = company
        .users
        .get(&stored.user_id)
        .ok_or(AuthError::Unknown)?
        .clone();
    Ok(Caller {
        user,
        token_id: id,
        company: company.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CompanyRole;
    use crate::store::{Company, CompanyView};
    use std::collections::HashMap;

    fn view_with(token: &Token) -> View {
        let company_id = token.company_id.clone();
        let user = User {
            id: token.user_id.clone(),
            company_id: company_id.clone(),
            kind: UserKind::Person,
            email: Some("a@example.com".into()),
            name: "A".into(),
            role: CompanyRole::Owner,
            created_at: Utc::now(),
        };
        let mut cv = CompanyView {
            company: Some(Company {
                id: company_id.clone(),
                name: "c".into(),
                redact_private_audit: true,
                created_at: Utc::now(),
            }),
            ..Default::default()
        };
        cv.users.insert(user.id.clone(), user);
        cv.tokens.insert(token.id.clone(), token.clone());
        let mut companies = HashMap::new();
        companies.insert(company_id.clone(), Arc::new(cv));
        let mut token_company = HashMap::new();
        token_company.insert(token.id.clone(), company_id);
        View {
            companies,
            token_company,
        }
    }

    fn minted(expires: Option<DateTime<Utc>>) -> Minted {
        mint(
            &UserId::generate(),
            &CompanyId::generate(),
            None,
            Utc::now(),
            expires,
        )
    }

    #[test]
    fn a_minted_token_authenticates_and_only_its_hash_is_stored() {
        let m = minted(None);
        let secret = m.plain.rsplit('.').next().unwrap().to_owned();
        assert!(
            !m.token
                .hash
                .iter()
                .zip(secret.bytes())
                .all(|(a, b)| *a == b)
        );
        let view = view_with(&m.token);
        let c = authenticate(&view, Some(&format!("Bearer {}", m.plain)), Utc::now()).unwrap();
        assert_eq!(c.user.id, m.token.user_id);
    }

    #[test]
    fn a_wrong_secret_missing_header_or_bad_shape_is_refused() {
        let m = minted(None);
        let view = view_with(&m.token);
        let mut wrong = m.plain.clone();
        wrong.pop();
        wrong.push('x');
        let now = Utc::now();
        for (h, want) in [
            (None, AuthError::Missing),
            (Some(format!("Bearer {wrong}")), AuthError::Unknown),
            (Some(m.plain.clone()), AuthError::Malformed),
            (Some("Bearer slc.tok_x".to_owned()), AuthError::Malformed),
            (
                Some("Bearer xyz.tok_1.abc".to_owned()),
                AuthError::Malformed,
            ),
            (
                Some("Bearer slc.tok_unknown.abc".to_owned()),
                AuthError::Unknown,
            ),
        ] {
            assert_eq!(
                authenticate(&view, h.as_deref(), now).unwrap_err(),
                want,
                "{h:?}"
            );
        }
    }

    #[test]
    fn an_expired_token_is_refused_from_the_moment_it_expires() {
        let exp = Utc::now() + chrono::Duration::seconds(60);
        let m = minted(Some(exp));
        let view = view_with(&m.token);
        let h = format!("Bearer {}", m.plain);
        assert!(authenticate(&view, Some(&h), exp - chrono::Duration::seconds(1)).is_ok());
        assert_eq!(
            authenticate(&view, Some(&h), exp).unwrap_err(),
            AuthError::Expired
        );
    }
}
