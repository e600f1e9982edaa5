/* The float64 reference of the backend operations (see reference.h). */
#include "config.h"

#include <math.h>
#include <string.h>

#include "reference.h"

#define IDX4(n, c, h, w, C, H, W) ((((int64_t)(n) * (C) + (c)) * (H) + (h)) * (W) + (w))

int ref_out_size(int in, int kernel, int stride, int pad, int dilation)
{
    return (in + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1;
}

/* ------------------------------------------------------------------ convolution */

void ref_conv_forward(const ref_conv *s, const double *x, const double *w, const double *bias,
                      double *y)
{
    for (int n = 0; n < s->N; n++)
        for (int o = 0; o < s->O; o++)
            for (int oh = 0; oh < s->OH; oh++)
                for (int ow = 0; ow < s->OW; ow++) {
                    double acc = bias ? bias[o] : 0.0;
                    for (int c = 0; c < s->C; c++)
                        for (int kh = 0; kh < s->KH; kh++)
                            for (int kw = 0; kw < s->KW; kw++) {
                                int ih = oh * s->stride_h - s->pad_h + kh * s->dil_h;
                                int iw = ow * s->stride_w - s->pad_w + kw * s->dil_w;
                                if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W)
                                    continue;
                                acc += x[IDX4(n, c, ih, iw, s->C, s->H, s->W)] *
                                       w[IDX4(o, c, kh, kw, s->C, s->KH, s->KW)];
                            }
                    y[IDX4(n, o, oh, ow, s->O, s->OH, s->OW)] = acc;
                }
}

void ref_conv_backward_data(const ref_conv *s, const double *dy, const double *w, double *dx)
{
    memset(dx, 0, sizeof(double) * (size_t)s->N * s->C * s->H * s->W);
    for (int n = 0; n < s->N; n++)
        for (int o = 0; o < s->O; o++)
            for (int oh = 0; oh < s->OH; oh++)
                for (int ow = 0; ow < s->OW; ow++) {
                    double g = dy[IDX4(n, o, oh, ow, s->O, s->OH, s->OW)];
                    for (int c = 0; c < s->C; c++)
                        for (int kh = 0; kh < s->KH; kh++)
                            for (int kw = 0; kw < s->KW; kw++) {
                                int ih = oh * s->stride_h - s->pad_h + kh * s->dil_h;
                                int iw = ow * s->stride_w - s->pad_w + kw * s->dil_w;
                                if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W)
                                    continue;
                                dx[IDX4(n, c, ih, iw, s->C, s->H, s->W)] +=
                                    g * w[IDX4(o, c, kh, kw, s->C, s->KH, s->KW)];
                            }
                }
}

void ref_conv_backward_filter(const ref_conv *s, const double *x, const double *dy, double *dw,
                              double *dbias)
{
    memset(dw, 0, sizeof(double) * (size_t)s->O * s->C * s->KH * s->KW);
    if (dbias)
        memset(dbias, 0, sizeof(double) * (size_t)s->O);
    for (int n = 0; n < s->N; n++)
        for (int o = 0; o < s->O; o++)
            for (int oh = 0; oh < s->OH; oh++)
                for (int ow = 0; ow < s->OW; ow++) {
                    double g = dy[IDX4(n, o, oh, ow, s->O, s->OH, s->OW)];
                    if (dbias)
                        dbias[o] += g;
                    for (int c = 0; c < s->C; c++)
                        for (int kh = 0; kh < s->KH; kh++)
                            for (int kw = 0; kw < s->KW; kw++) {
                                int ih = oh * s->stride_h - s->pad_h + kh * s->dil_h;
                                int iw = ow * s->stride_w - s->pad_w + kw * s->dil_w;
                                if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W)
                                    continue;
                                dw[IDX4(o, c, kh, kw, s->C, s->KH, s->KW)] +=
                                    g * x[IDX4(n, c, ih, iw, s->C, s->H, s->W)];
                            }
                }
}

/* ------------------------------------------------------------------ batch normalisation */

void ref_bn_train(int N, int C, int H, int W, const double *x, const double *gamma,
                  const double *beta, double eps, double momentum, double *y,
                  double *running_mean, double *running_var, double *save_mean,
                  double *save_invstd)
{
    const double count = (double)N * H * W;
    for (int c = 0; c < C; c++) {
        double mean = 0, var = 0;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < H * W; i++)
                mean += x[IDX4(n, c, 0, i, C, 1, H * W)];
        mean /= count;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < H * W; i++) {
                double d = x[IDX4(n, c, 0, i, C, 1, H * W)] - mean;
                var += d * d;
            }
        var /= count; /* biased: what normalises */
        const double invstd = 1.0 / sqrt(var + eps);
        for (int n = 0; n < N; n++)
            for (int i = 0; i < H * W; i++) {
                int64_t k = IDX4(n, c, 0, i, C, 1, H * W);
                y[k] = gamma[c] * (x[k] - mean) * invstd + beta[c];
            }
        const double unbiased = count > 1 ? var * count / (count - 1) : var;
        if (running_mean)
            running_mean[c] = (1 - momentum) * running_mean[c] + momentum * mean;
        if (running_var)
            running_var[c] = (1 - momentum) * running_var[c] + momentum * unbiased;
        if (save_mean)
            save_mean[c] = mean;
        if (save_invstd)
            save_invstd[c] = invstd;
    }
}

void ref_bn_infer(int N, int C, int H, int W, const double *x, const double *gamma,
                  const double *beta, const double *running_mean, const double *running_var,
                  double eps, double *y)
{
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            const double invstd = 1.0 / sqrt(running_var[c] + eps);
            for (int i = 0; i < H * W; i++) {
                int64_t k = IDX4(n, c, 0, i, C, 1, H * W);
                y[k] = gamma[c] * (x[k] - running_mean[c]) * invstd + beta[c];
            }
        }
}

void ref_bn_backward(int N, int C, int H, int W, const double *x, const double *dy,
                     const double *gamma, const double *save_mean, const double *save_invstd,
                     double *dx, double *dgamma, double *dbeta)
{
    /* With xhat = (x - mean) * invstd and m = N*H*W:
     *   dbeta = sum dy,  dgamma = sum dy * xhat,
     *   dx = gamma * invstd / m * (m * dy - dbeta - xhat * dgamma). */
    const double m = (double)N * H * W;
    for (int c = 0; c < C; c++) {
        double sum_dy = 0, sum_dy_xhat = 0;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < H * W; i++) {
                int64_t k = IDX4(n, c, 0, i, C, 1, H * W);
                double xhat = (x[k] - save_mean[c]) * save_invstd[c];
                sum_dy += dy[k];
                sum_dy_xhat += dy[k] * xhat;
            }
        if (dgamma)
            dgamma[c] = sum_dy_xhat;
        if (dbeta)
            dbeta[c] = sum_dy;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < H * W; i++) {
                int64_t k = IDX4(n, c, 0, i, C, 1, H * W);
                double xhat = (x[k] - save_mean[c]) * save_invstd[c];
                dx[k] = gamma[c] * save_invstd[c] / m * (m * dy[k] - sum_dy - xhat * sum_dy_xhat);
            }
    }
}

/* ------------------------------------------------------------------ elementwise */

void ref_relu_forward(int64_t n, const double *x, double *y)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] > 0 ? x[i] : 0;
}

void ref_relu_backward(int64_t n, const double *y, const double *dy, double *dx)
{
    for (int64_t i = 0; i < n; i++)
        dx[i] = y[i] > 0 ? dy[i] : 0;
}

void ref_add(int64_t n, const double *a, const double *b, double *y)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}

/* ------------------------------------------------------------------ pooling */

void ref_pool_forward(const ref_pool *p, const double *x, double *y)
{
    for (int n = 0; n < p->N; n++)
        for (int c = 0; c < p->C; c++)
            for (int oh = 0; oh < p->OH; oh++)
                for (int ow = 0; ow < p->OW; ow++) {
                    double best = -INFINITY, sum = 0;
                    int count = 0;
                    for (int kh = 0; kh < p->KH; kh++)
                        for (int kw = 0; kw < p->KW; kw++) {
                            int ih = oh * p->SH - p->PH + kh, iw = ow * p->SW - p->PW + kw;
                            if (ih < 0 || ih >= p->H || iw < 0 || iw >= p->W)
                                continue;
                            double v = x[IDX4(n, c, ih, iw, p->C, p->H, p->W)];
                            if (v > best)
                                best = v;
                            sum += v;
                            count++;
                        }
                    y[IDX4(n, c, oh, ow, p->C, p->OH, p->OW)] =
                        p->max ? best : (count ? sum / count : 0);
                }
}

void ref_pool_backward(const ref_pool *p, const double *x, const double *dy, double *dx)
{
    memset(dx, 0, sizeof(double) * (size_t)p->N * p->C * p->H * p->W);
    for (int n = 0; n < p->N; n++)
        for (int c = 0; c < p->C; c++)
            for (int oh = 0; oh < p->OH; oh++)
                for (int ow = 0; ow < p->OW; ow++) {
                    double g = dy[IDX4(n, c, oh, ow, p->C, p->OH, p->OW)];
                    double best = -INFINITY;
                    int64_t arg = -1;
                    int count = 0;
                    for (int kh = 0; kh < p->KH; kh++)
                        for (int kw = 0; kw < p->KW; kw++) {
                            int ih = oh * p->SH - p->PH + kh, iw = ow * p->SW - p->PW + kw;
                            if (ih < 0 || ih >= p->H || iw < 0 || iw >= p->W)
                                continue;
                            int64_t k = IDX4(n, c, ih, iw, p->C, p->H, p->W);
                            if (x[k] > best) { /* strict: the first maximum wins */
                                best = x[k];
                                arg = k;
                            }
                            count++;
                        }
                    if (p->max) {
                        if (arg >= 0)
                            dx[arg] += g;
                        continue;
                    }
                    for (int kh = 0; kh < p->KH; kh++)
                        for (int kw = 0; kw < p->KW; kw++) {
                            int ih = oh * p->SH - p->PH + kh, iw = ow * p->SW - p->PW + kw;
                            if (ih < 0 || ih >= p->H || iw < 0 || iw >= p->W)
                                continue;
                            dx[IDX4(n, c, ih, iw, p->C, p->H, p->W)] += g / count;
                        }
                }
}

void ref_gap_forward(int N, int C, int H, int W, const double *x, double *y)
{
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++) {
            double s = 0;
            for (int i = 0; i < H * W; i++)
                s += x[IDX4(n, c, 0, i, C, 1, H * W)];
            y[n * C + c] = s / (H * W);
        }
}

void ref_gap_backward(int N, int C, int H, int W, const double *dy, double *dx)
{
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < H * W; i++)
                dx[IDX4(n, c, 0, i, C, 1, H * W)] = dy[n * C + c] / (H * W);
}

/* ------------------------------------------------------------------ linear and loss */

void ref_linear_forward(int N, int K, int M, const double *x, const double *w, const double *b,
                        double *y)
{
    for (int n = 0; n < N; n++)
        for (int m = 0; m < M; m++) {
            double acc = b ? b[m] : 0;
            for (int k = 0; k < K; k++)
                acc += x[n * K + k] * w[m * K + k];
            y[n * M + m] = acc;
        }
}

void ref_linear_backward(int N, int K, int M, const double *x, const double *w,
                         const double *dy, double *dx, double *dw, double *db)
{
    if (dx)
        for (int n = 0; n < N; n++)
            for (int k = 0; k < K; k++) {
                double acc = 0;
                for (int m = 0; m < M; m++)
                    acc += dy[n * M + m] * w[m * K + k];
                dx[n * K + k] = acc;
            }
    for (int m = 0; m < M; m++)
        for (int k = 0; k < K; k++) {
            double acc = 0;
            for (int n = 0; n < N; n++)
                acc += dy[n * M + m] * x[n * K + k];
            dw[m * K + k] = acc;
        }
    if (db)
        for (int m = 0; m < M; m++) {
            double acc = 0;
            for (int n = 0; n < N; n++)
                acc += dy[n * M + m];
            db[m] = acc;
        }
}

double ref_softmax_xent(int N, int K, const double *logits, const int32_t *labels,
                        double smoothing, double grad_scale, double *dlogits)
{
    double total = 0;
    for (int n = 0; n < N; n++) {
        const double *z = logits + (int64_t)n * K;
        double mx = z[0], sum = 0;
        for (int k = 1; k < K; k++)
            if (z[k] > mx)
                mx = z[k];
        for (int k = 0; k < K; k++)
            sum += exp(z[k] - mx);
        for (int k = 0; k < K; k++) {
            double target = (k == labels[n] ? 1 - smoothing : 0) + smoothing / K;
            double logp = z[k] - mx - log(sum);
            total -= target * logp;
            if (dlogits)
                dlogits[(int64_t)n * K + k] = grad_scale * (exp(logp) - target) / N;
        }
    }
    return total / N;
}

int ref_topk_correct(int N, int K, const double *logits, const int32_t *labels, int k)
{
    int correct = 0;
    for (int n = 0; n < N; n++) {
        const double *z = logits + (int64_t)n * K;
        int label = labels[n], ahead = 0;
        for (int j = 0; j < K; j++)
            if (z[j] > z[label] || (z[j] == z[label] && j < label))
                ahead++;
        if (ahead < k)
            correct++;
    }
    return correct;
}

/* ------------------------------------------------------------------ shortcut A */

void ref_subsample_pad_forward(int N, int C, int H, int W, int Cout, int stride,
                               const double *x, double *y)
{
    int OH = (H + stride - 1) / stride, OW = (W + stride - 1) / stride;
    for (int n = 0; n < N; n++)
        for (int c = 0; c < Cout; c++)
            for (int h = 0; h < OH; h++)
                for (int w = 0; w < OW; w++)
                    y[IDX4(n, c, h, w, Cout, OH, OW)] =
                        c < C ? x[IDX4(n, c, h * stride, w * stride, C, H, W)] : 0;
}

void ref_subsample_pad_backward(int N, int C, int H, int W, int Cout, int stride,
                                const double *dy, double *dx)
{
    int OH = (H + stride - 1) / stride, OW = (W + stride - 1) / stride;
    memset(dx, 0, sizeof(double) * (size_t)N * C * H * W);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int h = 0; h < OH; h++)
                for (int w = 0; w < OW; w++)
                    dx[IDX4(n, c, h * stride, w * stride, C, H, W)] =
                        dy[IDX4(n, c, h, w, Cout, OH, OW)];
}

/* ------------------------------------------------------------------ optimizers */

void ref_axpby(int64_t n, double alpha, const double *x, double beta, double *y)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = alpha * x[i] + beta * y[i];
}

void ref_scale(int64_t n, double alpha, double *y)
{
    for (int64_t i = 0; i < n; i++)
        y[i] *= alpha;
}

double ref_sum_squares(int64_t n, const double *x)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += x[i] * x[i];
    return s;
}

void ref_sgd_update(int64_t n, double *param, const double *grad, double *velocity, double lr,
                    double momentum, double weight_decay, int nesterov)
{
    for (int64_t i = 0; i < n; i++) {
        double g = grad[i] + weight_decay * param[i];
        velocity[i] = momentum * velocity[i] + g;
        param[i] -= lr * (nesterov ? g + momentum * velocity[i] : velocity[i]);
    }
}

void ref_adam_update(int64_t n, double *param, const double *grad, double *m, double *v,
                     double lr, double beta1, double beta2, double eps, double weight_decay,
                     int decoupled, int64_t step)
{
    const double bc1 = 1 - pow(beta1, (double)step), bc2 = 1 - pow(beta2, (double)step);
    for (int64_t i = 0; i < n; i++) {
        double g = grad[i];
        if (decoupled)
            param[i] -= lr * weight_decay * param[i];
        else
            g += weight_decay * param[i];
        m[i] = beta1 * m[i] + (1 - beta1) * g;
        v[i] = beta2 * v[i] + (1 - beta2) * g * g;
        param[i] -= lr * (m[i] / bc1) / (sqrt(v[i] / bc2) + eps);
    }
}
