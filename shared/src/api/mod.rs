//! The controller's typed HTTP API (`/api/v1`): every request and response body the server
//! sends and the `edgefleet` CLI reads, so a renamed field breaks the build of both.
//!
//! With the `openapi` feature each type also derives its OpenAPI schema (the controller serves
//! `/api/v1/openapi.json`).

pub mod console;
pub mod fleet;
pub mod fleets;
pub mod models;
pub mod rollouts;
pub mod telemetry;
pub mod tokens;

pub use crate::inference::ErrorBody;

/// `v` with three significant digits, as measurements are shown (gate reasons, status tables).
pub fn three_digits(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v == 0.0 {
        return "0".into();
    }
    let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let text = format!("{v:.digits$}");
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_owned() } else { text }
}

#[cfg(test)]
mod tests {
    use super::three_digits;

    #[test]
    fn values_print_with_three_significant_digits() {
        for (v, want) in
            [(5.8312, "5.83"), (0.012345, "0.0123"), (1234.4, "1234"), (0.1, "0.1"), (0.0, "0"), (1.0, "1")]
        {
            assert_eq!(three_digits(v), want, "{v}");
        }
    }
}
