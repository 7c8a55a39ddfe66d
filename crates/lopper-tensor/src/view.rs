use crate::{Error, Result};

/// A borrowed row-major matrix, `rows x cols`, contiguous (`data.len() == rows * cols`).
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
}

/// A mutably borrowed row-major matrix, `rows x cols`, contiguous.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
}

impl<'a> MatRef<'a> {
    /// Views `data` as `rows x cols`; errors when the length does not match.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::shape(
                "MatRef::new",
                format!("{} elements cannot be viewed as {rows}x{cols}", data.len()),
            ));
        }
        Ok(MatRef { data, rows, cols })
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn data(&self) -> &'a [f32] {
        self.data
    }
    /// Row `i` as a slice.
    #[inline]
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
    /// The same matrix as a faer view.
    pub fn as_faer(&self) -> faer::MatRef<'a, f32> {
        faer::MatRef::from_row_major_slice(self.data, self.rows, self.cols)
    }
}

impl<'a> MatMut<'a> {
    /// Views `data` as `rows x cols`; errors when the length does not match.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::shape(
                "MatMut::new",
                format!("{} elements cannot be viewed as {rows}x{cols}", data.len()),
            ));
        }
        Ok(MatMut { data, rows, cols })
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    pub fn data(&mut self) -> &mut [f32] {
        self.data
    }
    /// Consumes the view and returns the underlying slice with its lifetime.
    pub fn into_data(self) -> &'a mut [f32] {
        self.data
    }
    pub fn rb(&self) -> MatRef<'_> {
        MatRef {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
        }
    }
    pub fn rb_mut(&mut self) -> MatMut<'_> {
        MatMut {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
        }
    }
    /// The same matrix as a faer view.
    pub fn as_faer(&mut self) -> faer::MatMut<'_, f32> {
        faer::MatMut::from_row_major_slice_mut(self.data, self.rows, self.cols)
    }
}
