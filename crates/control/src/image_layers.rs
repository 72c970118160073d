//! What the scheduling loop knows of pods' images: their layers and sizes,
//! for image locality. The server answers for images its own registry
//! hosts; anything else is unknown and scores neutral.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

/// A layer of an image: blob digest and size in bytes.
pub type Layer = (String, u64);

/// Resolves an image reference (as a pod's container names it) to its
/// layers.
pub trait ImageLayers: Send + Sync {
    /// The layers of `reference`, bottom first, or `None` when it is not
    /// an image this control plane can read (hosted elsewhere, unknown
    /// tag, an index without a manifest for the cluster's platform).
    fn layers<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Option<Vec<Layer>>>;
}

/// How long a resolved reference is trusted: a tag may move, and a pod
/// placed on a slightly old answer only loses some locality.
const CACHE_TTL: Duration = Duration::from_secs(30);

/// When a reference was resolved, and to what.
type Answer = (Instant, Option<Arc<Vec<Layer>>>);

/// Answers of an [`ImageLayers`] remembered for [`CACHE_TTL`], so a batch
/// of replicas resolves their image once.
pub(crate) struct CachedImageLayers {
    source: Arc<dyn ImageLayers>,
    answers: Mutex<HashMap<String, Answer>>,
}

impl CachedImageLayers {
    pub(crate) fn new(source: Arc<dyn ImageLayers>) -> CachedImageLayers {
        CachedImageLayers {
            source,
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// The layers of every image in `references` together (shared layers
    /// once), or `None` if any of them is unknown: a partial answer would
    /// make a node holding the known part look better than it is.
    pub(crate) async fn pod_layers(&self, references: &[String]) -> Option<Vec<Layer>> {
        let mut all: Vec<Layer> = Vec::new();
        for reference in references {
            for layer in self.layers(reference).await?.iter() {
                if !all.iter().any(|(digest, _)| *digest == layer.0) {
                    all.push(layer.clone());
                }
            }
        }
        Some(all)
    }

    async fn layers(&self, reference: &str) -> Option<Arc<Vec<Layer>>> {
        if let Some((at, answer)) = self.answers.lock().expect("layer cache").get(reference)
            && at.elapsed() < CACHE_TTL
        {
            return answer.clone();
        }
        let answer = self.source.layers(reference).await.map(Arc::new);
        let mut answers = self.answers.lock().expect("layer cache");
        answers.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        answers.insert(reference.to_string(), (Instant::now(), answer.clone()));
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Fixed(AtomicUsize);

    impl ImageLayers for Fixed {
        fn layers<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Option<Vec<Layer>>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                match reference {
                    "here/app:1" => {
                        Some(vec![("sha256:base".into(), 100), ("sha256:app".into(), 5)])
                    }
                    "here/tool:1" => {
                        Some(vec![("sha256:base".into(), 100), ("sha256:tool".into(), 7)])
                    }
                    _ => None,
                }
            })
        }
    }

    #[tokio::test]
    async fn a_pod_has_its_images_layers_once_and_none_if_one_is_unknown() {
        let source = Arc::new(Fixed(AtomicUsize::new(0)));
        let cache = CachedImageLayers::new(source.clone());
        let both = ["here/app:1".to_string(), "here/tool:1".to_string()];
        let layers = cache.pod_layers(&both).await.expect("both known");
        assert_eq!(layers.len(), 3, "the shared base counts once: {layers:?}");
        assert_eq!(layers.iter().map(|(_, size)| size).sum::<u64>(), 112);
        let mixed = [
            "here/app:1".to_string(),
            "docker.io/library/redis:7".to_string(),
        ];
        assert_eq!(cache.pod_layers(&mixed).await, None);
        cache.pod_layers(&both).await;
        assert_eq!(source.0.load(Ordering::SeqCst), 3, "answers are cached");
    }
}
