//! Bounded pools of equally sized byte buffers, recycled when dropped.
//!
//! Large, short-lived buffers (a store read run, a PCCRR response, a
//! hashing chunk) churn through the allocator when each is allocated fresh:
//! freed pages go back to the kernel and the next allocation faults them in
//! again, zeroed (with transparent huge pages a fault clears 2 MiB, for an
//! 80 KiB buffer). A [`BufPool`] keeps up to `max` buffers of one capacity
//! and hands them out again; a [`PooledBuf`] goes back when dropped, also
//! when it is the owner of a [`bytes::Bytes`] (`Bytes::from_owner`) whose
//! last view is dropped on another thread.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};

/// Up to `max` idle buffers of capacity `size`.
#[derive(Debug)]
pub struct BufPool {
    size: usize,
    max: usize,
    free: Mutex<Vec<Vec<u8>>>,
}

impl BufPool {
    /// A pool of buffers of capacity `size`, keeping at most `max` idle.
    pub fn new(size: usize, max: usize) -> Arc<BufPool> {
        Arc::new(BufPool {
            size,
            max,
            free: Mutex::new(Vec::new()),
        })
    }

    /// Idle buffers held now.
    pub fn idle(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Vec<u8>>> {
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pop(&self) -> Vec<u8> {
        self.lock()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// An empty buffer with the pool's capacity: fill it with `read_buf` /
    /// `extend`. Growing it past that
    /// capacity is allowed; it is then freed instead of recycled.
    pub fn take_empty(self: &Arc<Self>) -> PooledBuf {
        let mut buf = self.pop();
        buf.clear();
        PooledBuf {
            buf,
            pool: Arc::clone(self),
        }
    }

    /// A buffer of exactly `len` bytes whose contents are unspecified: a
    /// recycled buffer keeps its old bytes (zeros only where it grows), so
    /// the caller must overwrite all of it before handing any byte out.
    /// Longer than the pool's capacity: a buffer of its own, not recycled.
    pub fn take(self: &Arc<Self>, len: usize) -> PooledBuf {
        let mut buf = if len <= self.size {
            self.pop()
        } else {
            Vec::with_capacity(len)
        };
        if buf.len() < len {
            buf.resize(len, 0);
        } else {
            buf.truncate(len);
        }
        PooledBuf {
            buf,
            pool: Arc::clone(self),
        }
    }
}

/// A buffer from a [`BufPool`]; back to the pool when dropped (if it kept
/// the pool's capacity and the pool has room).
#[derive(Debug)]
pub struct PooledBuf {
    buf: Vec<u8>,
    pool: Arc<BufPool>,
}

impl Deref for PooledBuf {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

impl AsRef<[u8]> for PooledBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if self.buf.capacity() != self.pool.size {
            return;
        }
        let mut free = self.pool.lock();
        if free.len() < self.pool.max {
            free.push(std::mem::take(&mut self.buf));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn buffers_come_back_and_the_pool_stays_bounded() {
        let pool = BufPool::new(1024, 2);
        let bufs: Vec<PooledBuf> = (0..3).map(|_| pool.take(100)).collect();
        assert!(bufs.iter().all(|b| b.len() == 100 && b.capacity() == 1024));
        assert_eq!(pool.idle(), 0);
        drop(bufs);
        assert_eq!(pool.idle(), 2, "the third buffer is freed, not kept");
        let again = pool.take(1024);
        assert_eq!(pool.idle(), 1);
        assert_eq!(again.len(), 1024);
    }

    #[test]
    fn recycled_buffers_keep_their_allocation() {
        let pool = BufPool::new(4096, 4);
        let mut a = pool.take_empty();
        a.extend_from_slice(b"hello");
        let ptr = a.as_ptr();
        drop(a);
        let b = pool.take_empty();
        assert!(b.is_empty());
        assert_eq!(b.as_ptr(), ptr, "the same allocation is handed out again");
    }

    #[test]
    fn grown_and_oversized_buffers_are_not_kept() {
        let pool = BufPool::new(64, 4);
        let big = pool.take(65);
        assert_eq!(big.len(), 65);
        drop(big);
        assert_eq!(pool.idle(), 0);
        let mut grown = pool.take_empty();
        grown.extend_from_slice(&[1u8; 100]);
        drop(grown);
        assert_eq!(pool.idle(), 0);
    }

    #[test]
    fn a_bytes_owner_returns_its_buffer_when_the_last_view_drops() {
        let pool = BufPool::new(256, 4);
        let mut buf = pool.take(10);
        buf.copy_from_slice(b"0123456789");
        let all = Bytes::from_owner(buf);
        let part = all.slice(2..5);
        drop(all);
        assert_eq!(pool.idle(), 0, "a view is still alive");
        let t = std::thread::spawn(move || assert_eq!(&part[..], b"234"));
        t.join().unwrap();
        assert_eq!(pool.idle(), 1);
    }
}
