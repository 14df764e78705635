// Which keys a query may see in one attention layer: all earlier positions
// (full causal attention) or only the last Size of them, the query's own
// included (sliding-window attention, Mistral's sliding_window and Qwen2's when
// use_sliding_window is on). Defined once here so every attention path of the
// engine (prefill mask, paged decode, DistAttention partials on the debtor and
// on lenders) cuts the window at the very same position.
//
// The boundary follows Hugging Face transformers' masking_utils
// (sliding_window_overlay: kv_idx > q_idx - sliding_window, combined with the
// causal kv_idx <= q_idx), used by its eager and SDPA attention: the query at
// position i sees keys j with i - Size < j <= i, i.e. exactly Size keys once
// i >= Size - 1. (Older transformers' _make_causal_mask and flash-attention's
// window_size=(w, w) let one more key in; we follow the current mask code.)
namespace Platform.Core.Models;

public readonly record struct AttentionWindow
{
    private AttentionWindow(int? size) => Size = size;

    /// <summary>Full causal attention.</summary>
    public static AttentionWindow Full => default;

    /// <summary>Sliding-window attention over the last <paramref name="size"/> positions, the query's own included.</summary>
    public static AttentionWindow Sliding(int size) =>
        size > 0 ? new AttentionWindow(size) : throw new ArgumentOutOfRangeException(nameof(size), size, "a sliding window must hold at least one key");

    /// <summary>Keys a query sees at most, itself included; null for full attention.</summary>
    public int? Size { get; }

    public bool IsFull => Size is null;

    /// <summary>The first key position a query at <paramref name="queryPosition"/> sees (it sees every position from there up to its own).</summary>
    public long FirstVisibleKey(long queryPosition) => Size is { } w ? Math.Max(0, queryPosition - w + 1) : 0;

    public override string ToString() => Size is { } w ? $"sliding({w})" : "full";
}
