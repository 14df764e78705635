// Predicts what a step costs, so the scheduler can bound a step by time and not
// only by tokens. At long context attention dominates: a fixed token budget
// that takes 0.1 s at context 0 takes seconds near 32K, and everything else
// (decodes, new requests, an abort) waits for it. The cost of computing n
// tokens of a sequence whose first c tokens are cached is counted in flops:
//   linear    2 · P flops per token (P: the weights one token goes through),
//   attention 4 · layers · heads · head_dim flops per (query, key) pair
//             (q·k and p·v, 2 flops per multiply-add each), with
//             n · c + n · (n + 1) / 2 causal pairs; in the layers with a
//             sliding window of W keys a query pairs with at most W of them,
//             Σᵢ min(c + i, W) pairs for i = 1..n.
// The achieved rate is learned online: after every step with real work the
// engine reports the step's wall time and the model keeps an exponentially
// weighted average of flops per second. A step's flop budget is that rate
// times the target step time; until the first measurement there is no bound
// (the token budget alone applies, and the first step is then a measurement).
using Platform.Core.Models;

namespace Platform.Engine.Scheduling;

public sealed class StepCostModel
{
    /// <summary>Weight of the newest measurement in the rate average.</summary>
    private const double Smoothing = 0.3;

    /// <param name="attentionFlopsPerPair">Attention flops per (query, key) pair of the full-attention layers.</param>
    /// <param name="slidingFlopsPerPair">The same for the sliding-window layers, which pair a query with at most <paramref name="slidingWindow"/> keys.</param>
    public StepCostModel(double linearFlopsPerToken, double attentionFlopsPerPair, TimeSpan targetStepTime,
        double slidingFlopsPerPair = 0, int? slidingWindow = null)
    {
        if (linearFlopsPerToken < 0 || attentionFlopsPerPair < 0 || slidingFlopsPerPair < 0)
            throw new ArgumentOutOfRangeException(nameof(linearFlopsPerToken), "costs cannot be negative");
        if (slidingWindow is <= 0) throw new ArgumentOutOfRangeException(nameof(slidingWindow), "a sliding window must be positive");
        LinearFlopsPerToken = linearFlopsPerToken;
        AttentionFlopsPerPair = attentionFlopsPerPair;
        SlidingFlopsPerPair = slidingWindow is null ? 0 : slidingFlopsPerPair;
        SlidingWindow = slidingWindow;
        TargetStepTime = targetStepTime;
    }

    /// <summary>The cost model of a model config: its projections and MLP per token, its attention per pair (full and sliding layers apart).</summary>
    public static StepCostModel For(ModelConfig c, TimeSpan targetStepTime)
    {
        ArgumentNullException.ThrowIfNull(c);
        double h = c.HiddenSize, q = (double)c.NumHeads * c.HeadDim, kv = (double)c.NumKvHeads * c.HeadDim;
        double perLayer = h * (q + 2 * kv) + q * h + 3 * h * c.IntermediateSize;
        int slidingLayers = Enumerable.Range(0, c.NumLayers).Count(l => !c.WindowOf(l).IsFull);
        double perPairPerLayer = 4.0 * c.NumHeads * c.HeadDim;
        // The output head runs only for sampled rows (one per sequence); it is left out of the per-token cost.
        return new StepCostModel(2 * c.NumLayers * perLayer, perPairPerLayer * (c.NumLayers - slidingLayers), targetStepTime,
            perPairPerLayer * slidingLayers, slidingLayers > 0 ? c.SlidingWindow : null);
    }

    public double LinearFlopsPerToken { get; }
    public double AttentionFlopsPerPair { get; }
    public double SlidingFlopsPerPair { get; }
    /// <summary>Keys a query of a sliding-window layer pairs with at most; null when no layer slides.</summary>
    public int? SlidingWindow { get; }
    /// <summary>Zero: steps are bounded by tokens only. Settable on the engine thread's behalf by the bench, between requests.</summary>
    public TimeSpan TargetStepTime { get; internal set; }
    /// <summary>The learned rate (null before the first measurement).</summary>
    public double? FlopsPerSecond { get; private set; }

    /// <summary>Flops of computing <paramref name="tokens"/> tokens after <paramref name="context"/> cached ones.</summary>
    public double ChunkFlops(int tokens, int context) =>
        tokens * LinearFlopsPerToken + AttentionFlopsPerPair * tokens * (context + (tokens + 1) / 2.0)
        + (SlidingWindow is { } window ? SlidingFlopsPerPair * WindowedPairs(tokens, context, window) : 0);

    /// <summary>Σ min(context + i, window) for i = 1..tokens: the pairs of a chunk in a sliding-window layer.</summary>
    private static double WindowedPairs(int tokens, int context, int window)
    {
        // The first k queries still see every earlier key; the rest see exactly `window` keys.
        double k = Math.Clamp(window - (double)context, 0, tokens);
        return k * context + k * (k + 1) / 2 + (tokens - k) * window;
    }

    /// <summary>Flops one step may cost: infinite while there is no target or no measurement yet.</summary>
    public double StepFlopBudget => TargetStepTime > TimeSpan.Zero && FlopsPerSecond is { } rate
        ? rate * TargetStepTime.TotalSeconds
        : double.PositiveInfinity;

    /// <summary>The largest n ≤ <paramref name="cap"/> whose chunk at <paramref name="context"/> costs at most <paramref name="flops"/>.</summary>
    public int MaxTokensWithin(double flops, int context, int cap)
    {
        if (cap <= 0 || flops <= 0) return 0;
        if (double.IsPositiveInfinity(flops)) return cap;
        if (SlidingWindow is not null)
        {
            // Piecewise in n: the cost grows with n, so search for the largest n that fits.
            if (ChunkFlops(cap, context) <= flops) return cap;
            int fits = 0, over = cap;
            while (over - fits > 1)
            {
                int mid = fits + (over - fits) / 2;
                if (ChunkFlops(mid, context) <= flops) fits = mid;
                else over = mid;
            }
            return fits;
        }
        // f(n) = a·n² + b·n with a = attn/2, b = linear + attn·(c + 1/2).
        double a = AttentionFlopsPerPair / 2, b = LinearFlopsPerToken + AttentionFlopsPerPair * (context + 0.5);
        double n = a > 0 ? (-b + Math.Sqrt(b * b + 4 * a * flops)) / (2 * a) : b > 0 ? flops / b : cap;
        return n >= cap ? cap : (int)Math.Floor(n);
    }

    /// <summary>Folds one step's measured wall time into the rate (ignored when either is not positive).</summary>
    public void Observe(double flops, TimeSpan elapsed)
    {
        if (flops <= 0 || elapsed <= TimeSpan.Zero || double.IsInfinity(flops)) return;
        double rate = flops / elapsed.TotalSeconds;
        FlopsPerSecond = FlopsPerSecond is { } previous ? previous + Smoothing * (rate - previous) : rate;
    }

    /// <summary>Sets the rate outright (tests, and a host that measured it before).</summary>
    public void SetRate(double flopsPerSecond)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(flopsPerSecond);
        FlopsPerSecond = flopsPerSecond;
    }
}
