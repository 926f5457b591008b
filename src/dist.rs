//! Process groups for data-parallel training over libtorch's own distributed engine, c10d
//! (the engine under PyTorch's DDP): a `TCPStore` rendezvous and a Gloo group for CPU tensors,
//! through the C++ shim `src/shim/dist.cpp`. A process learns its place from the environment
//! torchrun sets (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`) or SLURM's
//! (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`). Every collective waits at most the group's
//! timeout, so a rank that died stops the others with an error instead of a hang.
use anyhow::{bail, Context, Result};
use std::ffi::{c_char, c_int, c_long, c_void, CStr, CString};
use std::time::Duration;
use tch::Tensor;

extern "C" {
    fn svib_dist_new(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        size: c_int,
        timeout_ms: c_long,
        bind_host: *const c_char,
        out: *mut *mut c_void,
        err: *mut c_char,
        cap: usize,
    ) -> c_int;
    fn svib_dist_free(g: *mut c_void);
    fn svib_dist_allreduce_sum(g: *mut c_void, ts: *const *const c_void, n: usize, err: *mut c_char, cap: usize) -> c_int;
    fn svib_dist_broadcast(g: *mut c_void, ts: *const *const c_void, n: usize, root: c_int, err: *mut c_char, cap: usize) -> c_int;
    fn svib_dist_allgather(g: *mut c_void, input: *const c_void, outs: *const *const c_void, n: usize, err: *mut c_char, cap: usize) -> c_int;
    fn svib_dist_barrier(g: *mut c_void, err: *mut c_char, cap: usize) -> c_int;
}

/// Where this process stands in a distributed run, from the launcher's environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistEnv {
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
}

impl DistEnv {
    /// torchrun's variables, else SLURM's; None when neither names a world of 2 or more.
    pub fn from_env() -> Result<Option<DistEnv>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Self::from_env`] over any source of variables (for tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<DistEnv>> {
        let keys = if var("WORLD_SIZE").is_some() { ["RANK", "WORLD_SIZE", "LOCAL_RANK"] } else { ["SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"] };
        let num = |k: &str| -> Result<Option<usize>> {
            var(k).map(|v| v.trim().parse::<usize>().with_context(|| format!("environment variable {k}: expected a whole number, got `{v}`"))).transpose()
        };
        let Some(world_size) = num(keys[1])? else { return Ok(None) };
        if world_size <= 1 {
            return Ok(None);
        }
        let rank = num(keys[0])?.with_context(|| format!("environment variable {}: not set, but {} = {world_size}", keys[0], keys[1]))?;
        if rank >= world_size {
            bail!("environment variable {}: expected a rank below {} = {world_size}, got {rank}", keys[0], keys[1]);
        }
        let local_rank = num(keys[2])?.unwrap_or(0);
        let master_addr = var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into());
        let port = var("MASTER_PORT").unwrap_or_else(|| "29500".into());
        let master_port = port.trim().parse().with_context(|| format!("environment variable MASTER_PORT: expected a port number, got `{port}`"))?;
        Ok(Some(DistEnv { rank, world_size, local_rank, master_addr, master_port }))
    }
}

/// A Gloo process group (CPU tensors).
pub struct Group {
    ptr: *mut c_void,
    pub rank: usize,
    pub size: usize,
}

// SAFETY: the group is used from one thread at a time (&self methods are called by the training
// thread); c10d's Gloo backend is itself thread-safe.
unsafe impl Send for Group {}

/// Runs one shim call and turns its error text into an error.
fn call(what: &str, f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<()> {
    let mut buf = [0 as c_char; 1024];
    if f(buf.as_mut_ptr(), buf.len()) != 0 {
        // SAFETY: the shim NUL-terminates what it writes into buf.
        let msg = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned();
        bail!("{what}: {}", msg.lines().next().unwrap_or(""));
    }
    Ok(())
}

fn ptrs(ts: &[&Tensor]) -> Vec<*const c_void> {
    ts.iter().map(|t| t.as_ptr() as *const c_void).collect()
}

impl Group {
    /// Joins the group `env` describes; waits at most `timeout` for the others, and each
    /// collective at most `timeout`.
    pub fn join(env: &DistEnv, timeout: Duration) -> Result<Group> {
        let host = CString::new(env.master_addr.clone())?;
        let local = matches!(env.master_addr.as_str(), "127.0.0.1" | "localhost" | "::1");
        let bind = CString::new(if local { "127.0.0.1" } else { "" })?;
        let mut ptr = std::ptr::null_mut();
        let what = format!("rank {} of {}: joining the group at {}:{}", env.rank, env.world_size, env.master_addr, env.master_port);
        // SAFETY: the strings and `ptr` outlive the call; the shim allocates the group.
        call(&what, |e, n| unsafe {
            svib_dist_new(host.as_ptr(), env.master_port as c_int, env.rank as c_int, env.world_size as c_int, timeout.as_millis() as c_long, bind.as_ptr(), &mut ptr, e, n)
        })?;
        Ok(Group { ptr, rank: env.rank, size: env.world_size })
    }

    /// Sums each tensor over the ranks, in place.
    pub fn all_reduce_sum(&self, ts: &[&Tensor]) -> Result<()> {
        let p = ptrs(ts);
        // SAFETY: live tensors borrowed for the call, changed in place.
        call("all-reduce", |e, n| unsafe { svib_dist_allreduce_sum(self.ptr, p.as_ptr(), p.len(), e, n) })
    }

    /// Averages each tensor over the ranks, in place.
    pub fn all_reduce_mean(&self, ts: &[&Tensor]) -> Result<()> {
        self.all_reduce_sum(ts)?;
        for t in ts {
            let _ = t.shallow_clone().g_div_(&Tensor::from(self.size as f64));
        }
        Ok(())
    }

    /// Copies each tensor of rank `root` into every other rank's, in place.
    pub fn broadcast(&self, ts: &[&Tensor], root: usize) -> Result<()> {
        let p = ptrs(ts);
        // SAFETY: as above.
        call("broadcast", |e, n| unsafe { svib_dist_broadcast(self.ptr, p.as_ptr(), p.len(), root as c_int, e, n) })
    }

    /// Every rank's `t`, concatenated along the first dimension in rank order.
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        let t = t.contiguous();
        let outs: Vec<Tensor> = (0..self.size).map(|_| t.empty_like()).collect();
        let p = ptrs(&outs.iter().collect::<Vec<_>>());
        // SAFETY: as above; `outs` are written.
        call("all-gather", |e, n| unsafe { svib_dist_allgather(self.ptr, t.as_ptr() as *const c_void, p.as_ptr(), p.len(), e, n) })?;
        Ok(Tensor::cat(&outs, 0))
    }

    /// Waits until every rank is here.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: the group is live.
        call("barrier", |e, n| unsafe { svib_dist_barrier(self.ptr, e, n) })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: created by svib_dist_new, freed once.
        unsafe { svib_dist_free(self.ptr) }
    }
}

#[cfg(test)]
mod tests;
