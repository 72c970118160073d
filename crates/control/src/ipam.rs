//! IP address management: pools, and the addresses pods claim from them.
//!
//! ```text
//! /cluster/ippools/<pool>            IpPool
//! /cluster/ipalloc/<pool>/<ip>       IpClaim: who holds the address
//! /cluster/podips/<project>/<pod>    the same IpClaim, found by pod
//! ```
//!
//! A claim creates both keys in one transaction guarded by "absent", so two
//! claims of one address can never both succeed, whatever the number of
//! servers; it also guards the pool's revision, so a claim made against a
//! pool that changed meanwhile is retried against the new one. The address
//! keys outlive their pool: a pool deleted and imported again still sees
//! the addresses in use.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::time::Duration;

use wharf_api::{
    ANNOTATION_FIXED_IP, ANNOTATION_FIXED_IPS, ANNOTATION_IP_POOL, IpClaim, IpPool, ObjectError,
    Pod,
};
use wharf_store::{KeyValue, Revision, StoreExt, Txn};

use crate::ControlError;
use crate::objects::{Objects, key_of, now_millis, revision_of};

/// Key prefix of the address claims, per pool.
pub const IP_ALLOCATIONS: &str = "/cluster/ipalloc/";
/// Key prefix of the address claims, per pod.
pub const POD_IPS: &str = "/cluster/podips/";

/// Claims retried at most this often before giving up (each retry means
/// another claim won an address first).
const CLAIM_ATTEMPTS: usize = 64;

/// Key of `ip`'s claim in `pool`.
pub fn ip_allocation_key(pool: &str, ip: Ipv4Addr) -> String {
    format!("{IP_ALLOCATIONS}{pool}/{ip}")
}

/// Key of the claim held by pod `project/name`.
pub fn pod_ip_key(project: &str, name: &str) -> String {
    format!("{POD_IPS}{project}/{name}")
}

fn decode_claim(kv: &KeyValue) -> Result<IpClaim, ControlError> {
    serde_json::from_slice(&kv.value)
        .map_err(|e| ControlError::Internal(format!("corrupt IP claim at {}: {e}", kv.key)))
}

/// What a pod asks for: a pool, an address, or both.
pub(crate) fn requested(pod: &Pod) -> Result<(Option<String>, Option<Ipv4Addr>), ControlError> {
    let annotations = &pod.metadata.annotations;
    let pool = annotations.get(ANNOTATION_IP_POOL).cloned();
    let fixed = match annotations.get(ANNOTATION_FIXED_IP) {
        None => None,
        Some(text) => Some(text.trim().parse::<Ipv4Addr>().map_err(|_| {
            ControlError::Invalid(ObjectError::Invalid {
                field: format!("metadata.annotations[{ANNOTATION_FIXED_IP}]"),
                message: format!("{text:?} is not an IPv4 address"),
            })
        })?),
    };
    Ok((pool, fixed))
}

/// The candidate addresses a pod lists (`wharf.io/fixed-ips`, in order):
/// it claims the first one free.
pub(crate) fn candidates(pod: &Pod) -> Result<Vec<Ipv4Addr>, ControlError> {
    let Some(text) = pod.metadata.annotations.get(ANNOTATION_FIXED_IPS) else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(str::trim)
        .filter(|ip| !ip.is_empty())
        .map(|ip| {
            ip.parse::<Ipv4Addr>().map_err(|_| {
                ControlError::Invalid(ObjectError::Invalid {
                    field: format!("metadata.annotations[{ANNOTATION_FIXED_IPS}]"),
                    message: format!("{ip:?} is not an IPv4 address"),
                })
            })
        })
        .collect()
}

/// Whether a pod asks for an address of a pool at all (a pool, a fixed
/// address or candidate addresses).
pub(crate) fn asks_address(pod: &Pod) -> bool {
    !matches!(requested(pod), Ok((None, None)))
        || pod.metadata.annotations.contains_key(ANNOTATION_FIXED_IPS)
}

/// The pool a pod takes its address from, by annotation: the pool it
/// names, else the one offering the fixed address it names (`None` for a
/// node-local address), and that fixed address.
pub(crate) async fn requested_pool(
    objects: &Objects,
    pod: &Pod,
) -> Result<Option<(String, Option<Ipv4Addr>)>, ControlError> {
    match requested(pod)? {
        (Some(pool), fixed) => Ok(Some((pool, fixed))),
        (None, Some(ip)) => Ok(Some((objects.pool_containing(ip).await?, Some(ip)))),
        (None, None) => match candidates(pod)?.first() {
            Some(first) => Ok(Some((objects.pool_containing(*first).await?, None))),
            None => Ok(None),
        },
    }
}

/// A pool as the scheduler needs it: how many addresses it offers and which
/// pod holds each address held now.
#[derive(Clone, Debug, Default)]
pub struct PoolUse {
    /// Addresses the pool offers.
    pub size: u64,
    /// Address -> holding pod (project, name).
    pub holders: BTreeMap<Ipv4Addr, (String, String)>,
}

impl Objects {
    /// Size and holders of pool `name`; `NotFound` when there is no such pool.
    pub async fn pool_use(&self, name: &str) -> Result<PoolUse, ControlError> {
        let pool: IpPool = self.require(None, name).await?;
        let size = pool.addresses()?.size();
        let holders = self
            .pool_claims(name)
            .await?
            .into_iter()
            .map(|c| (c.ip, (c.project, c.pod)))
            .collect();
        Ok(PoolUse { size, holders })
    }

    /// Creates pools, or replaces their spec. A pool may not lose addresses
    /// that pods hold (the error names them); nothing changes unless every
    /// pool can be stored. Returns, per pool, whether it was created.
    pub async fn import_ip_pools(&self, pools: Vec<IpPool>) -> Result<Vec<bool>, ControlError> {
        let mut current = Vec::with_capacity(pools.len());
        for pool in &pools {
            pool.validate()?;
            let stored = self.get::<IpPool>(None, &pool.metadata.name).await?;
            if stored.as_ref().is_some_and(|s| s.spec != pool.spec) {
                self.check_keeps_claims(pool).await?;
            }
            current.push(stored);
        }
        let mut created = Vec::new();
        for (mut pool, stored) in pools.into_iter().zip(current) {
            match stored {
                None => {
                    pool.metadata.resource_version = None;
                    self.create(pool).await?;
                    created.push(true);
                }
                Some(current) => {
                    let mut updated = current.clone();
                    updated.spec = pool.spec;
                    updated.metadata.labels = pool.metadata.labels;
                    updated.metadata.annotations = pool.metadata.annotations;
                    if updated != current {
                        updated.metadata.generation += 1;
                        self.update(updated).await?;
                    }
                    created.push(false);
                }
            }
        }
        Ok(created)
    }

    /// Fails when the new spec of `pool` no longer offers an address in use.
    async fn check_keeps_claims(&self, pool: &IpPool) -> Result<(), ControlError> {
        let addresses = pool.addresses()?;
        let stranded: Vec<String> = self
            .pool_claims(&pool.metadata.name)
            .await?
            .into_iter()
            .filter(|c| !addresses.offers(c.ip))
            .map(|c| format!("{} ({}/{})", c.ip, c.project, c.pod))
            .collect();
        if stranded.is_empty() {
            Ok(())
        } else {
            Err(ControlError::Conflict(format!(
                "pool {} would no longer offer addresses in use: {}; delete those pods first",
                pool.metadata.name,
                stranded.join(", ")
            )))
        }
    }

    /// Deletes a pool that no pod holds an address of.
    pub async fn delete_ip_pool(&self, name: &str) -> Result<IpPool, ControlError> {
        let pool: IpPool = self.require(None, name).await?;
        let claims = self.pool_claims(name).await?;
        if !claims.is_empty() {
            return Err(ControlError::Conflict(format!(
                "pool {name} has {} addresses in use (first: {} by {}/{}); delete those pods first",
                claims.len(),
                claims[0].ip,
                claims[0].project,
                claims[0].pod
            )));
        }
        self.delete::<IpPool>(None, name, revision_of(&pool)?).await
    }

    /// The addresses of `pool` held now, in key order.
    pub async fn pool_claims(&self, pool: &str) -> Result<Vec<IpClaim>, ControlError> {
        let prefix = format!("{IP_ALLOCATIONS}{pool}/");
        self.store()
            .list_all(&prefix, 1000)
            .await?
            .iter()
            .map(decode_claim)
            .collect()
    }

    /// The address pod `project/name` holds, if any.
    pub async fn pod_claim(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Option<IpClaim>, ControlError> {
        match self.store().get(&pod_ip_key(project, name)).await? {
            Some(kv) => decode_claim(&kv).map(Some),
            None => Ok(None),
        }
    }

    /// Claims the address a bound pod asks for by annotation, or returns
    /// the one it holds already. `None`: the pod asks for no pool (its node
    /// gives it a node-local address).
    pub async fn claim_pod_ip(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Option<IpClaim>, ControlError> {
        for _ in 0..CLAIM_ATTEMPTS {
            let pod: Pod = self.require(Some(project), name).await?;
            let (pool_name, fixed) = requested(&pod)?;
            let candidates = candidates(&pod)?;
            if pool_name.is_none() && fixed.is_none() && candidates.is_empty() {
                return Ok(None);
            }
            let node = pod.spec.node_name.clone().ok_or_else(|| {
                ControlError::Conflict(format!("pod {project}/{name} is not bound to a node"))
            })?;
            let index_key = pod_ip_key(project, name);
            if let Some(kv) = self.store().get(&index_key).await? {
                let held = decode_claim(&kv)?;
                if held.pod_uid == pod.metadata.uid {
                    return Ok(Some(held));
                }
                // Left by an earlier pod of the same name.
                self.release_claim(&kv, &held).await?;
                continue;
            }
            let pool_name = match pool_name {
                Some(pool) => pool,
                None => {
                    let ip = fixed.or(candidates.first().copied());
                    self.pool_containing(ip.expect("checked above")).await?
                }
            };
            let pool: IpPool = self.require(None, &pool_name).await?;
            let pool_revision = revision_of(&pool)?.unwrap_or(0);
            let addresses = pool.addresses()?;
            let in_use: BTreeMap<Ipv4Addr, IpClaim> = self
                .pool_claims(&pool_name)
                .await?
                .into_iter()
                .map(|c| (c.ip, c))
                .collect();
            let ip = match fixed {
                Some(ip) => {
                    if !addresses.offers(ip) {
                        return Err(ControlError::Invalid(ObjectError::Invalid {
                            field: format!("metadata.annotations[{ANNOTATION_FIXED_IP}]"),
                            message: format!("pool {pool_name} does not offer {ip}"),
                        }));
                    }
                    if let Some(holder) = in_use.get(&ip) {
                        return Err(ControlError::Conflict(format!(
                            "{ip} of pool {pool_name} is held by pod {}/{}",
                            holder.project, holder.pod
                        )));
                    }
                    ip
                }
                None if !candidates.is_empty() => {
                    first_free_candidate(&candidates, &pool_name, &addresses, &in_use)?
                }
                None => {
                    let free: Vec<Ipv4Addr> = addresses
                        .iter()
                        .filter(|a| !in_use.contains_key(a))
                        .collect();
                    if free.is_empty() {
                        return Err(ControlError::Conflict(format!(
                            "pool {pool_name} has no free address ({} of {} in use)",
                            in_use.len(),
                            addresses.size()
                        )));
                    }
                    // Concurrent claimers start at different places, so
                    // they rarely race for one address.
                    free[rand::random_range(0..free.len())]
                }
            };
            let claim = IpClaim {
                pool: pool_name.clone(),
                ip,
                prefix_len: addresses.subnet.prefix_len,
                gateway: addresses.gateway,
                project: project.to_string(),
                pod: name.to_string(),
                pod_uid: pod.metadata.uid.clone(),
                node,
                claimed_at: now_millis(),
            };
            let value = serde_json::to_vec(&claim).expect("claims serialize");
            let allocation_key = ip_allocation_key(&pool_name, ip);
            let txn = Txn::new()
                .when_revision(key_of::<IpPool>(None, &pool_name), pool_revision)
                .when_exists(key_of::<Pod>(Some(project), name))
                .when_revision(&allocation_key, 0)
                .when_revision(&index_key, 0)
                .put(allocation_key, value.clone())
                .put(index_key, value);
            if self.store().txn(txn).await?.succeeded {
                return Ok(Some(claim));
            }
        }
        Err(ControlError::Conflict(format!(
            "claiming an address for pod {project}/{name} kept losing races; try again"
        )))
    }

    async fn pool_containing(&self, ip: Ipv4Addr) -> Result<String, ControlError> {
        let (pools, _) = self.list::<IpPool>(None, None).await?;
        pools
            .into_iter()
            .find(|p| p.addresses().is_ok_and(|a| a.offers(ip)))
            .map(|p| p.metadata.name)
            .ok_or_else(|| {
                ControlError::Invalid(ObjectError::Invalid {
                    field: format!("metadata.annotations[{ANNOTATION_FIXED_IP}]"),
                    message: format!("no IP pool offers {ip}"),
                })
            })
    }

    /// The address claim pod `project/name` holds, if any.
    pub async fn pod_ip_claim(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Option<IpClaim>, ControlError> {
        Ok(self.pod_claim_entry(project, name).await?.map(|(_, c)| c))
    }

    /// Gives back the address pod `project/name` holds (only if held by the
    /// pod with `uid`, when given). Returns the claim released.
    pub async fn release_pod_ip(
        &self,
        project: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Result<Option<IpClaim>, ControlError> {
        for _ in 0..CLAIM_ATTEMPTS {
            let Some(kv) = self.store().get(&pod_ip_key(project, name)).await? else {
                return Ok(None);
            };
            let claim = decode_claim(&kv)?;
            if uid.is_some_and(|uid| uid != claim.pod_uid) {
                return Ok(None);
            }
            if self.release_claim(&kv, &claim).await? {
                return Ok(Some(claim));
            }
        }
        Err(ControlError::Conflict(format!(
            "the address of pod {project}/{name} keeps changing"
        )))
    }

    /// Deletes a claim's two keys if the pod's key is still at the revision read.
    async fn release_claim(&self, kv: &KeyValue, claim: &IpClaim) -> Result<bool, ControlError> {
        let txn = with_claim_released(Txn::new(), kv, claim);
        Ok(self.store().txn(txn).await?.succeeded)
    }

    /// The claim pod `project/name` holds, with its stored key and value.
    pub(crate) async fn pod_claim_entry(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Option<(KeyValue, IpClaim)>, ControlError> {
        let Some(kv) = self.store().get(&pod_ip_key(project, name)).await? else {
            return Ok(None);
        };
        let claim = decode_claim(&kv)?;
        Ok(Some((kv, claim)))
    }
}

/// The first of `candidates` that `pool` offers and nobody holds; an error
/// naming the holders when none is free.
fn first_free_candidate(
    candidates: &[Ipv4Addr],
    pool: &str,
    addresses: &wharf_api::PoolAddresses,
    in_use: &BTreeMap<Ipv4Addr, IpClaim>,
) -> Result<Ipv4Addr, ControlError> {
    if let Some(ip) = candidates.iter().find(|ip| !addresses.offers(**ip)) {
        return Err(ControlError::Invalid(ObjectError::Invalid {
            field: format!("metadata.annotations[{ANNOTATION_FIXED_IPS}]"),
            message: format!("pool {pool} does not offer {ip}"),
        }));
    }
    if let Some(ip) = candidates.iter().find(|ip| !in_use.contains_key(ip)) {
        return Ok(*ip);
    }
    let held: Vec<String> = candidates
        .iter()
        .filter_map(|ip| in_use.get(ip))
        .map(|c| format!("{} by {}/{}", c.ip, c.project, c.pod))
        .collect();
    Err(ControlError::Conflict(format!(
        "none of the candidate addresses of pool {pool} is free: {}",
        held.join(", ")
    )))
}

/// `txn` also deleting a claim's two keys, if the pod's key is still at
/// the revision read.
pub(crate) fn with_claim_released(txn: Txn, kv: &KeyValue, claim: &IpClaim) -> Txn {
    txn.when_revision(&kv.key, kv.mod_revision)
        .delete(&kv.key)
        .delete(ip_allocation_key(&claim.pool, claim.ip))
}

/// Frees the addresses of pods that no longer exist, in case their agents
/// never gave them back (node gone, agent killed). A claim is freed only
/// when two passes in a row find it orphaned, so an agent still tearing
/// the pod down keeps its address meanwhile.
pub struct IpReconciler {
    objects: Objects,
    every: Duration,
    suspects: HashMap<String, Revision>,
}

impl IpReconciler {
    /// A reconciler passing every `every`.
    pub fn new(objects: Objects, every: Duration) -> IpReconciler {
        IpReconciler {
            objects,
            every,
            suspects: HashMap::new(),
        }
    }

    /// Runs passes until the task is dropped.
    pub async fn run(mut self) {
        loop {
            match self.pass().await {
                Ok(0) => {}
                Ok(freed) => tracing::info!(freed, "freed addresses of pods that are gone"),
                Err(err) => tracing::warn!(error = %err, "IP reconciliation failed"),
            }
            tokio::time::sleep(self.every).await;
        }
    }

    /// One pass: returns how many claims it freed.
    pub async fn pass(&mut self) -> Result<usize, ControlError> {
        let claims = self.objects.store().list_all(POD_IPS, 1000).await?;
        let mut suspects = HashMap::new();
        let mut freed = 0;
        for kv in &claims {
            let claim = decode_claim(kv)?;
            let pod: Option<Pod> = self.objects.get(Some(&claim.project), &claim.pod).await?;
            if pod.is_some_and(|p| p.metadata.uid == claim.pod_uid) {
                continue;
            }
            if self.suspects.get(&kv.key) == Some(&kv.mod_revision) {
                if self.objects.release_claim(kv, &claim).await? {
                    tracing::info!(pool = claim.pool, ip = %claim.ip, pod = format!("{}/{}", claim.project, claim.pod), "freed an orphaned address");
                    freed += 1;
                }
            } else {
                suspects.insert(kv.key.clone(), kv.mod_revision);
            }
        }
        self.suspects = suspects;
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_objects::{deployment, node, objects, pod};
    use wharf_api::{IpPoolSpec, ObjectMeta};

    async fn pool(objects: &Objects) {
        let pool = IpPool {
            api_version: "wharf.io/v1".into(),
            kind: "IpPool".into(),
            metadata: ObjectMeta {
                name: "pods".into(),
                ..Default::default()
            },
            spec: IpPoolSpec {
                cidr: "10.92.0.0/24".into(),
                gateway: "10.92.0.1".into(),
                ..Default::default()
            },
        };
        objects.import_ip_pools(vec![pool]).await.unwrap();
    }

    async fn claim(objects: &Objects, pod: &Pod) -> Result<Option<IpClaim>, ControlError> {
        objects.claim_pod_ip("shop", &pod.metadata.name).await
    }

    #[tokio::test]
    async fn a_pod_with_candidate_addresses_claims_the_first_free_one() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        node(&objects, "n1", true).await;
        pool(&objects).await;
        let mut web = deployment(&objects, "web").await;
        web.metadata
            .annotations
            .insert(ANNOTATION_FIXED_IPS.into(), "10.92.0.7, 10.92.0.8".into());
        let first = pod(&objects, &web, Some("n1")).await;
        let second = pod(&objects, &web, Some("n1")).await;
        let third = pod(&objects, &web, Some("n1")).await;
        let ip = |text: &str| text.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            claim(&objects, &first).await.unwrap().unwrap().ip,
            ip("10.92.0.7")
        );
        assert_eq!(
            claim(&objects, &second).await.unwrap().unwrap().ip,
            ip("10.92.0.8")
        );
        let err = claim(&objects, &third).await.unwrap_err().to_string();
        assert!(err.contains("none of the candidate addresses"), "{err}");
        assert!(
            err.contains(&first.metadata.name),
            "names the holders: {err}"
        );
        // Released, the address goes to the next pod asking.
        objects
            .release_pod_ip("shop", &first.metadata.name, None)
            .await
            .unwrap();
        assert_eq!(
            claim(&objects, &third).await.unwrap().unwrap().ip,
            ip("10.92.0.7")
        );

        let mut bad = deployment(&objects, "bad").await;
        bad.metadata
            .annotations
            .insert(ANNOTATION_FIXED_IPS.into(), "10.92.0.7,nope".into());
        let bad_pod = pod(&objects, &bad, Some("n1")).await;
        let err = claim(&objects, &bad_pod).await.unwrap_err().to_string();
        assert!(err.contains("\"nope\" is not an IPv4 address"), "{err}");
        let mut outside = deployment(&objects, "outside").await;
        outside
            .metadata
            .annotations
            .insert(ANNOTATION_FIXED_IPS.into(), "10.92.0.9,10.93.0.1".into());
        let outside_pod = pod(&objects, &outside, Some("n1")).await;
        let err = claim(&objects, &outside_pod).await.unwrap_err().to_string();
        assert!(err.contains("does not offer 10.93.0.1"), "{err}");
        assert!(asks_address(&outside_pod));
    }
}
