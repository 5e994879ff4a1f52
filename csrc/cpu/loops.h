// CPU loops over whole matrices that are not one cell's time step: transposes (the operand layouts
// the products want), the token-id weight gradient, and the pieces of the training step (softmax
// cross-entropy, the squared gradient norm, the SGD update from a transposed gradient). Plain
// pointers and sizes, row-major contiguous data; each loop splits its work between torch's threads
// unless it says it runs on the calling thread.
#pragma once

#include <cstdint>

namespace charlstm {
namespace cpu {

// Rows [r0, r1) of the row-major `in` (C columns) into columns r0..r1 of `o`, whose rows are ldo
// long: o[c * ldo + r] = in[r * C + c]. On the calling thread.
template <typename S> void transpose_rows(const S* in, int64_t C, S* o, int64_t ldo, int64_t r0, int64_t r1);

// w[r, c] += alpha * g[c, r] for the contiguous w [R, C] and g [C, R]: an SGD update from a
// gradient kept in the layout its product made it in.
template <typename S> void add_transposed(S* w, const S* g, int64_t R, int64_t C, S alpha);

// The same for rows [r0, r1) of a w whose rows are ldw apart (a block of columns of a wider
// matrix), on the calling thread.
template <typename S>
void add_transposed_rows(S* w, int64_t ldw, const S* g, int64_t R, int64_t C, S alpha, int64_t r0, int64_t r1);

// Single-row products that read the weight in the order it is stored (see matvec.cpp), with
// y = or += the result (`accumulate`):
// y[n] = dot(w[n, :], x) for the row-major w [N, K] (the product x^T w^T), and
// y[n] = sum_k x[k] b[k, n] for the row-major b [K, N] (the product x^T b).
template <typename S> void matvec(const S* w, int64_t N, int64_t K, const S* x, S* y, bool accumulate);
template <typename S> void vecmat(const S* b, int64_t K, int64_t N, const S* x, S* y, bool accumulate);

// The input-weight gradient of token ids: table[ids[r]] += src[r] for every row r of src
// [rows, width]; then, when column_sums is given, column_sums = the column sums of table
// [table_rows, width], which are those of src (the bias gradient).
template <typename S>
struct RowScatterAdd {
    const S* src;
    const int64_t* ids;
    S* table;
    S* column_sums;
    int64_t rows, table_rows, width;
};
template <typename S> void scatter_add(const RowScatterAdd<S>& a);

// Softmax cross-entropy of each row of logits [rows, vocab] against its target:
// row_loss[r] = logsumexp(logits[r]) - logits[r, targets[r]], and
// grad[r] = scale * (softmax(logits[r]) - one_hot(targets[r])).
template <typename S>
struct SoftmaxCrossEntropy {
    const S* logits;
    const int64_t* targets;
    S* grad;
    S* row_loss;
    S scale;
    int64_t rows, vocab;
};
template <typename S> void softmax_cross_entropy(const SoftmaxCrossEntropy<S>& a);

// The sum of squares of `size` contiguous values, in double (4k-value chunks summed in S first).
template <typename S> double sum_squares(const S* data, int64_t size);

}  // namespace cpu
}  // namespace charlstm
