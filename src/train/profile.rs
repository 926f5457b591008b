//! Where a training step spends its time, with `SVIB_PROFILE=1`: wall time per phase summed over
//! the run and printed at the end (CPU ops are synchronous, so the split is exact there; on CUDA
//! each phase ends with a synchronisation so that its kernels are counted in it).
use std::time::Instant;

pub struct Profile {
    enabled: bool,
    cuda: bool,
    last: Instant,
    phases: Vec<(&'static str, f64)>,
}

impl Profile {
    pub fn from_env(device: tch::Device) -> Profile {
        let enabled = std::env::var("SVIB_PROFILE").is_ok_and(|v| v == "1");
        Profile { enabled, cuda: device.is_cuda(), last: Instant::now(), phases: vec![] }
    }

    /// Closes the phase that ran since the previous call and books it under `name`.
    pub fn lap(&mut self, name: &'static str) {
        if !self.enabled {
            return;
        }
        if self.cuda {
            tch::Cuda::synchronize(0);
        }
        let dt = self.last.elapsed().as_secs_f64();
        match self.phases.iter_mut().find(|p| p.0 == name) {
            Some(p) => p.1 += dt,
            None => self.phases.push((name, dt)),
        }
        self.last = Instant::now();
    }

    /// One line per phase: seconds and share of the total.
    pub fn report(&self) -> Option<String> {
        if !self.enabled || self.phases.is_empty() {
            return None;
        }
        let total: f64 = self.phases.iter().map(|p| p.1).sum();
        let mut s = format!("profile ({total:.1} s in the step loop):\n");
        for (n, t) in &self.phases {
            s += &format!("  {n:<22} {t:8.2} s {:5.1} %\n", 100.0 * t / total);
        }
        Some(s)
    }
}
