//! Training losses, as the reference computes them: supervised contrastive,
//! the ordinal ring around the real prototype, BCE with logits, AlignRepel and
//! cross-entropy. Each returns a scalar tensor.

use tch::{Kind, Reduction, Tensor};

/// SupCon over L2-normalised `z [B, E]` with integer `labels [B]`:
/// `sim = z z^T / tau` minus its row max; positives share the label (self
/// excluded); `log_prob = sim - log(sum_{j != i} exp(sim) + 1e-12)`;
/// loss = `-mean_i(sum_pos log_prob / (n_pos + 1e-12))`.
pub fn supcon(z: &Tensor, labels: &Tensor, temperature: f64) -> Tensor {
    let b = z.size()[0];
    let sim = z.matmul(&z.transpose(0, 1)) / temperature;
    let (row_max, _) = sim.max_dim(1, true);
    let sim = &sim - row_max.detach();
    let not_self = Tensor::eye(b, (Kind::Float, z.device())).neg() + 1.0;
    let labels = labels.view([-1, 1]);
    let same = labels
        .eq_tensor(&labels.transpose(0, 1))
        .to_kind(Kind::Float);
    let positives = same * &not_self;
    let denom = (sim.exp() * &not_self).sum_dim_intlist(1, true, Kind::Float);
    let log_prob = &sim - (denom + 1e-12).log();
    let n_pos = positives.sum_dim_intlist(1, false, Kind::Float);
    let mean_pos = (&positives * log_prob).sum_dim_intlist(1, false, Kind::Float) / (n_pos + 1e-12);
    -mean_pos.mean(Kind::Float)
}

/// Ordinal ring loss: `d = ||z - proto_real||`; for each k with classes k and
/// k+1 both in the batch, `relu(margin - (mean d_{k+1} - mean d_k))`; the mean
/// of those terms, 0 when there is none. Labels are ordinal, 0 = real.
pub fn ordinal_ring(z: &Tensor, proto_real: &Tensor, labels: &[i64], margin: f64) -> Tensor {
    let d = (z - proto_real.unsqueeze(0))
        .square()
        .sum_dim_intlist(1, false, Kind::Float)
        .sqrt();
    let device = z.device();
    let class_mean = |k: i64| -> Option<Tensor> {
        let idx: Vec<i64> = (0..labels.len() as i64)
            .filter(|&i| labels[i as usize] == k)
            .collect();
        (!idx.is_empty()).then(|| {
            d.index_select(0, &Tensor::from_slice(&idx).to_device(device))
                .mean(Kind::Float)
        })
    };
    let max_label = labels.iter().copied().max().unwrap_or(0);
    let mut terms = Vec::new();
    for k in 0..max_label {
        if let (Some(lo), Some(hi)) = (class_mean(k), class_mean(k + 1)) {
            terms.push((-(hi - lo) + margin).relu());
        }
    }
    if terms.is_empty() {
        return z.sum(Kind::Float) * 0.0;
    }
    Tensor::stack(&terms, 0).mean(Kind::Float)
}

/// Mean binary cross-entropy with logits; `targets` in {0, 1}, float.
pub fn bce_with_logits(logits: &Tensor, targets: &Tensor) -> Tensor {
    logits.binary_cross_entropy_with_logits::<Tensor>(targets, None, None, Reduction::Mean)
}

/// AlignRepel: `mismatch_mse` for real clips (`y = 0`), `relu(margin - mse)` for
/// fakes, averaged over the batch.
pub fn align_repel(mismatch_mse: &Tensor, y_video: &Tensor, margin: f64) -> Tensor {
    let fake = y_video.to_kind(Kind::Float);
    let repel = (-mismatch_mse + margin).relu();
    (mismatch_mse * (-&fake + 1.0) + repel * fake).mean(Kind::Float)
}

/// Mean cross-entropy of class logits `[B, C]` against class indices `[B]`.
pub fn cross_entropy(logits: &Tensor, classes: &Tensor) -> Tensor {
    logits.cross_entropy_for_logits(&classes.to_kind(Kind::Int64))
}
