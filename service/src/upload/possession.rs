//! Cross-owner instant upload with proof of possession (`--dedup-scope global`).
//!
//! Off by default: instant upload answers from the caller's own files only. With it on,
//! a `CheckUpload` with an MD5, from a client that accepts challenges, for content the
//! caller has no file of, is answered with a challenge whatever the server stores: a
//! fresh key and byte ranges. The client answers with the keyed digest of those ranges
//! and the BLAKE3 of its whole file. Only when the server stores content with that MD5,
//! size and BLAKE3, and the same ranges of the stored bytes give the same digest, does
//! the caller get a file of it. Any other answer gets an upload session, as if nothing
//! were stored, so neither a challenge nor the answer to a wrong proof tells whether
//! the content exists (a right proof does: its sender holds the bytes anyway). The
//! stored bytes are read only for a proof that names the stored BLAKE3, which only
//! someone who had the whole content can have computed; even so, checking a proof
//! takes at least [`PROOF_FLOOR`], so that reading them shows in no answer's timing,
//! and a failed read counts as a wrong proof.
//!
//! Challenges are not stored: the token carries its expiry and key, sealed with a
//! secret of this process (a keyed BLAKE3 over the owner, MD5, size, expiry and key),
//! so a proof counts only for the owner and content it was asked for, within the
//! validity, at the server process that asked.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use transfer_proto::possession::{DIGEST_LEN, RangeDigest, ranges_for};
use transfer_proto::v1::PossessionProof;

use crate::blob::{BlobStore, ContentLocator};
use crate::error::ServiceError;
use crate::identity::Owner;
use crate::ledger::{Blake3Digest, ContentIndex, Md5Digest};

/// How long a challenge may be answered: time for the client to hash the whole file,
/// an hour or the time to read it at 50 MiB/s, whichever is longer.
fn validity(size: u64) -> Duration {
    Duration::from_secs(3600).max(Duration::from_secs(size / (50 << 20)))
}

/// The least time checking a proof takes, whatever it finds.
pub const PROOF_FLOOR: Duration = Duration::from_millis(250);

const TOKEN_VERSION: u8 = 1;
/// Version, expiry (seconds since the epoch), key, seal.
const TOKEN_LEN: usize = 1 + 8 + DIGEST_LEN + DIGEST_LEN;

/// Issues and checks this process's challenges.
pub struct Challenges {
    secret: [u8; DIGEST_LEN],
}

/// A challenge for one owner and content.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub token: Vec<u8>,
    pub key: [u8; DIGEST_LEN],
    /// (offset, length) of each range to hash, in order.
    pub ranges: Vec<(u64, u64)>,
}

/// A proof as the client sent it, of the right form.
#[derive(Debug, Clone)]
pub struct Proof {
    token: Vec<u8>,
    range_digest: [u8; DIGEST_LEN],
    blake3: Blake3Digest,
}

impl Proof {
    pub fn parse(proof: PossessionProof) -> Result<Self, ServiceError> {
        let digest = |field, bytes: &[u8]| {
            <[u8; DIGEST_LEN]>::try_from(bytes).map_err(|_| ServiceError::BadRequest {
                field,
                problem: format!("must be {DIGEST_LEN} bytes, got {}", bytes.len()),
            })
        };
        Ok(Self {
            range_digest: digest("proof.range_digest", &proof.range_digest)?,
            blake3: digest("proof.blake3", &proof.blake3)?,
            token: proof.token.to_vec(),
        })
    }
}

impl Challenges {
    /// With a fresh secret from the operating system's random source.
    pub fn new() -> Result<Self, getrandom::Error> {
        let mut secret = [0; DIGEST_LEN];
        getrandom::fill(&mut secret)?;
        Ok(Self { secret })
    }

    /// A new challenge for `owner` to prove it holds the `size`-byte content with `md5`.
    pub fn issue(
        &self,
        owner: &Owner,
        md5: &Md5Digest,
        size: u64,
    ) -> Result<Challenge, ServiceError> {
        let mut key = [0; DIGEST_LEN];
        getrandom::fill(&mut key).map_err(|e| ServiceError::Randomness(e.to_string()))?;
        let expires = now_secs().saturating_add(validity(size).as_secs());
        let mut token = Vec::with_capacity(TOKEN_LEN);
        token.push(TOKEN_VERSION);
        token.extend_from_slice(&expires.to_be_bytes());
        token.extend_from_slice(&key);
        token.extend_from_slice(&self.seal(owner, md5, size, expires, &key));
        Ok(Challenge {
            token,
            key,
            ranges: ranges_for(&key, size),
        })
    }

    /// The key of `token`, if this process issued it for this owner and content and it
    /// has not expired.
    fn key_of(
        &self,
        token: &[u8],
        owner: &Owner,
        md5: &Md5Digest,
        size: u64,
    ) -> Option<[u8; DIGEST_LEN]> {
        if token.len() != TOKEN_LEN || token[0] != TOKEN_VERSION {
            return None;
        }
        let expires = u64::from_be_bytes(token[1..9].try_into().ok()?);
        let key: [u8; DIGEST_LEN] = token[9..9 + DIGEST_LEN].try_into().ok()?;
        let seal: [u8; DIGEST_LEN] = token[9 + DIGEST_LEN..].try_into().ok()?;
        // blake3::Hash compares in constant time.
        let sealed = blake3::Hash::from(self.seal(owner, md5, size, expires, &key));
        (sealed == blake3::Hash::from(seal) && now_secs() <= expires).then_some(key)
    }

    fn seal(
        &self,
        owner: &Owner,
        md5: &Md5Digest,
        size: u64,
        expires: u64,
        key: &[u8; DIGEST_LEN],
    ) -> [u8; DIGEST_LEN] {
        let mut sealed = blake3::Hasher::new_keyed(&self.secret);
        sealed.update(b"transfer.v1 possession token");
        sealed.update(&(owner.as_str().len() as u64).to_be_bytes());
        sealed.update(owner.as_str().as_bytes());
        sealed.update(md5);
        sealed.update(&size.to_be_bytes());
        sealed.update(&expires.to_be_bytes());
        sealed.update(key);
        *sealed.finalize().as_bytes()
    }
}

/// `work`'s result, never sooner than `floor` from now: what it did shows in no timing
/// shorter than that.
pub async fn at_least<T>(floor: Duration, work: impl Future<Output = T>) -> T {
    let until = tokio::time::Instant::now() + floor;
    let result = work.await;
    tokio::time::sleep_until(until).await;
    result
}

/// The BLAKE3 of the stored content with this MD5 and size, if `proof` shows that
/// `owner` holds it; `None` for a proof that does not hold, for whatever reason. Run it
/// inside [`at_least`]`(`[`PROOF_FLOOR`]`, ..)`.
pub async fn proven_content(
    challenges: &Challenges,
    ledger: &dyn ContentIndex,
    blobs: &dyn BlobStore,
    owner: &Owner,
    md5: &Md5Digest,
    size: u64,
    proof: &Proof,
) -> Result<Option<Blake3Digest>, ServiceError> {
    let Some(key) = challenges.key_of(&proof.token, owner, md5, size) else {
        return Ok(None);
    };
    let Some(content) = ledger.stored_content(&proof.blake3, size, md5).await? else {
        return Ok(None);
    };
    let content = ContentLocator::new(content);
    let mut digest = RangeDigest::new(&key);
    for (offset, len) in ranges_for(&key, size) {
        match blobs.read(&content, offset, len as usize).await {
            Ok(bytes) => digest.update(&bytes),
            // Said to the caller, a failed read would tell that the content exists.
            Err(error) => {
                tracing::warn!(%content, %error, "reading stored content to check a possession proof failed");
                return Ok(None);
            }
        }
    }
    let holds = blake3::Hash::from(digest.finalize()) == blake3::Hash::from(proof.range_digest);
    Ok(holds.then_some(proof.blake3))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(name: &str) -> Owner {
        Owner::parse(name.as_bytes()).unwrap()
    }

    #[test]
    fn a_token_counts_only_for_the_owner_and_content_it_was_issued_for() {
        let challenges = Challenges::new().unwrap();
        let (alice, md5) = (owner("alice"), [7; 16]);
        let challenge = challenges.issue(&alice, &md5, 5000).unwrap();
        assert_eq!(challenge.ranges, ranges_for(&challenge.key, 5000));
        let key_of = |token: &[u8], who: &Owner, md5: &Md5Digest, size| {
            challenges.key_of(token, who, md5, size)
        };
        assert_eq!(
            key_of(&challenge.token, &alice, &md5, 5000),
            Some(challenge.key)
        );
        assert_eq!(key_of(&challenge.token, &owner("bob"), &md5, 5000), None);
        assert_eq!(key_of(&challenge.token, &alice, &[8; 16], 5000), None);
        assert_eq!(key_of(&challenge.token, &alice, &md5, 5001), None);
        // Another key, or another process's secret, breaks the seal.
        let mut forged = challenge.token.clone();
        forged[20] ^= 1;
        assert_eq!(key_of(&forged, &alice, &md5, 5000), None);
        let other = Challenges::new().unwrap();
        assert_eq!(other.key_of(&challenge.token, &alice, &md5, 5000), None);
        assert_eq!(key_of(&challenge.token[..40], &alice, &md5, 5000), None);
    }

    #[test]
    fn an_expired_token_counts_for_nothing() {
        let challenges = Challenges::new().unwrap();
        let (alice, md5, key) = (owner("alice"), [7; 16], [3; DIGEST_LEN]);
        let expired = now_secs() - 1;
        let mut token = vec![TOKEN_VERSION];
        token.extend_from_slice(&expired.to_be_bytes());
        token.extend_from_slice(&key);
        token.extend_from_slice(&challenges.seal(&alice, &md5, 10, expired, &key));
        assert_eq!(challenges.key_of(&token, &alice, &md5, 10), None);
    }
}
