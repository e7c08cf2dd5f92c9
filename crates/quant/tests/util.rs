//! Shared helpers: a deterministic random stream.

/// xorshift64*: a fixed, dependency-free stream of test values.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Roughly normal (sum of four uniforms), scaled.
    pub fn normal(&mut self, std: f32) -> f32 {
        (0..4).map(|_| self.uniform()).sum::<f32>() * 0.866 * std
    }

    pub fn matrix(&mut self, rows: usize, cols: usize, std: f32) -> Vec<f32> {
        (0..rows * cols).map(|_| self.normal(std)).collect()
    }
}
