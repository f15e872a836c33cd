//! What a model predicted, read from its outputs the same way everywhere: the status report's
//! class counts, telemetry's output histograms and low-confidence sampling, and the shadow's
//! agreement with the active version.

use crate::tensor::{Tensor, TensorData};

/// Classes counted per model version (higher class indices or labels count in the last).
pub const OUTPUT_CLASSES: usize = 32;

/// Calls `f(row, class, top_score)` for each row's prediction: the top class of the first
/// `[N, C>1]` float output (with its score), or the value of the first integer `[N]`/`[N, 1]`
/// output (a label; no score). Other outputs (e.g. a regression) give nothing. Allocation-free.
pub(crate) fn for_each_prediction(outputs: &[Tensor], mut f: impl FnMut(usize, usize, Option<f64>)) {
    match class_scores(outputs).map(|t| (&t.data, t.shape[1])) {
        Some((TensorData::F32(v), width)) => v.chunks(width).enumerate().for_each(|(row, s)| {
            let top = argmax(s);
            f(row, top, Some(f64::from(s[top])));
        }),
        Some((TensorData::F64(v), width)) => v.chunks(width).enumerate().for_each(|(row, s)| {
            let top = argmax(s);
            f(row, top, Some(s[top]));
        }),
        _ => {
            let labels = outputs.iter().find(|t| t.shape.len() == 1 || (t.shape.len() == 2 && t.shape[1] == 1));
            match labels.map(|t| &t.data) {
                Some(TensorData::I64(v)) => {
                    v.iter().enumerate().filter(|(_, l)| **l >= 0).for_each(|(row, &l)| f(row, l as usize, None));
                }
                Some(TensorData::I32(v)) => {
                    v.iter().enumerate().filter(|(_, l)| **l >= 0).for_each(|(row, &l)| f(row, l as usize, None));
                }
                _ => {}
            }
        }
    }
}

/// The first `[N, C]` output with C > 1: a classifier's class scores.
pub(crate) fn class_scores(outputs: &[Tensor]) -> Option<&Tensor> {
    outputs.iter().find(|t| t.shape.len() == 2 && t.shape[1] > 1)
}

/// Index of the largest element (the first among equals); NaN never wins.
pub(crate) fn argmax<T: PartialOrd>(row: &[T]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        // `x.partial_cmp(x)` is none only for NaN.
        if *v > row[best] || row[best].partial_cmp(&row[best]).is_none() {
            best = i;
        }
    }
    best
}
