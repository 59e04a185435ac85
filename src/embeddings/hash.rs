//! The `hash` embedder: feature hashing of word unigrams and bigrams into a
//! fixed number of dimensions, signed by a second hash bit, L2-normalised.
//! Texts that share words share coordinates, so their cosine similarity is
//! higher: real locality, no model, fully deterministic (FNV-1a, stable
//! across platforms and Rust versions).

/// Embeds `text` into `dimensions` floats with unit L2 norm (all zeros for a
/// text without words).
pub(crate) fn embed(text: &str, dimensions: usize) -> Vec<f32> {
    let dimensions = dimensions.max(1);
    let mut vector = vec![0f32; dimensions];
    let words: Vec<String> = words(text).collect();
    let mut add = |feature: &[&str], weight: f32| {
        let hash = fnv1a(feature);
        let index = (hash % dimensions as u64) as usize;
        let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
        vector[index] += sign * weight;
    };
    for word in &words {
        add(&[word], 1.0);
    }
    for pair in words.windows(2) {
        add(&[&pair[0], &pair[1]], 0.5);
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in &mut vector {
            *x /= norm;
        }
    }
    vector
}

/// Lower-cased alphanumeric words.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

fn fnv1a(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            hash ^= 0x1f;
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        for byte in part.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Cosine similarity of two vectors of equal length.
#[cfg(test)]
pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b)).max(f32::MIN_POSITIVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_text_always_gives_the_same_vector() {
        let a = embed("How do I reset my password?", 256);
        assert_eq!(a, embed("How do I reset my password?", 256));
        assert_eq!(
            a,
            embed("how do i RESET my password", 256),
            "case and punctuation do not matter"
        );
        // A fixed coordinate pins the hash function across platforms and versions.
        let nonzero = a.iter().filter(|x| **x != 0.0).count();
        assert!((8..=11).contains(&nonzero), "{nonzero} features set");
    }

    #[test]
    fn vectors_have_the_configured_dimension_and_unit_norm() {
        for dimensions in [1, 16, 256, 1536] {
            let v = embed("vector databases store embeddings", dimensions);
            assert_eq!(v.len(), dimensions);
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        }
        assert!(embed("", 8).iter().all(|x| *x == 0.0));
        assert!(embed("?!", 8).iter().all(|x| *x == 0.0));
    }

    #[test]
    fn shared_words_mean_higher_similarity() {
        let query = embed("how do I reset my password", 256);
        let close = embed("I forgot my password and need to reset it", 256);
        let far = embed("the best pizza toppings in naples", 256);
        assert!(cosine(&query, &close) > 0.4, "{}", cosine(&query, &close));
        assert!(cosine(&query, &close) > cosine(&query, &far) + 0.3);
        assert!(cosine(&query, &query) > 0.999);
    }

    #[test]
    fn word_order_matters_a_little_through_bigrams() {
        let a = embed("reset password", 256);
        let b = embed("password reset", 256);
        let sim = cosine(&a, &b);
        assert!(sim > 0.7 && sim < 0.999, "{sim}");
    }
}
