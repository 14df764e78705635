// DistAttention over real in-process workers talking gRPC on loopback: a
// sequence whose KV fits on no single worker borrows blocks from one or two
// creditors, and yields the same tokens and (within 1e-4) the same logits as a
// worker with memory enough for all of it. Also: refusals say what was needed,
// lent blocks come back when the sequence ends or its lease runs out. A creditor
// killed or frozen mid-decode is re-planned onto a spare peer and the sequence
// goes on with one big worker's tokens and logits; with no peer able to take its
// positions the sequence ends with an error naming it, never a hang.
// With bfloat16 compute (the CRD's default) or float16 the split sequence gives
// the same tokens as one big worker of that dtype, logits within its rounding,
// and stays within the 16-bit compute's own bound of one big float32 worker.
using Grpc.Net.Client;
using Platform.Core.Protos;
using Platform.Engine;
using Microsoft.Extensions.DependencyInjection;
using Platform.Engine.Scheduling;
using FinishReason = Platform.Engine.Scheduling.FinishReason;

namespace Platform.Worker.Tests;

public sealed class DistAttentionTests(Xunit.Abstractions.ITestOutputHelper output)
{
    // 256 tokens (16 blocks) of KV each: a debtor keeps 90% (14 blocks, 224 tokens) for one sequence, a creditor lends all but 10% (224).
    private static readonly string[] Small = ["--kv-tokens", "256", "--dist-attention", "on"];

    private static SamplingParams Greedy(int maxTokens) => new() { MaxTokens = maxTokens, Temperature = 0, IgnoreEos = true };

    private static async Task<(List<int> Tokens, List<float[]> Logits, GenerationChunk Last)> RunAsync(LlmEngine engine, int[] prompt, int maxTokens,
        Action<GenerationChunk>? onChunk = null, CancellationToken cancellationToken = default)
    {
        var tokens = new List<int>();
        var logits = new List<float[]>();
        GenerationChunk? last = null;
        await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(prompt, Greedy(maxTokens), ReturnLogits: true), cancellationToken))
        {
            tokens.AddRange(chunk.TokenIds);
            if (chunk.Logits is not null) logits.AddRange(chunk.Logits);
            last = chunk;
            onChunk?.Invoke(chunk);
        }
        return (tokens, logits, last!);
    }

    private static async Task<InProcessWorker> StartAsync(params string[] args) =>
        await InProcessWorker.StartAsync(TestModel.Dir, ["--threads", "1", "--seed", "1", .. args]);

    private static async Task<InProcessWorker> StartSlidingAsync(params string[] args) =>
        await InProcessWorker.StartAsync(TestModel.SlidingDir, ["--threads", "1", "--seed", "1", .. args]);

    /// <summary>
    /// A mistral with a 37-token sliding window, split over a debtor and two creditors: 532 positions, 224 local,
    /// [224, 448) on one creditor, [448, 532) on the other. Prefill chunks past 261 see nothing local (the local
    /// partial is empty) and decode queries (from 520 on) nothing on the first segment (its creditor is not asked);
    /// queries near a boundary see part of a block. Tokens and logits must equal one big worker's, whose windowed
    /// attention the engine's numerics tests hold to the float64 reference.
    /// </summary>
    [Fact]
    public async Task A_sliding_window_sequence_split_across_workers_matches_one_big_worker()
    {
        const int maxTokens = 12;
        var prompt = TestModel.Prompt(520, seed: 45);

        await using var reference = await StartSlidingAsync("--kv-tokens", "4096");
        Assert.Equal(TestModel.SlidingWindow, reference.Engine.Config.SlidingWindow);
        var expected = await RunAsync(reference.Engine, prompt, maxTokens);

        await using var first = await StartSlidingAsync(Small);
        await using var second = await StartSlidingAsync(Small);
        await using var debtor = await StartSlidingAsync([.. Small, "--peers",
            string.Join(',', new[] { first, second }.Select(l => l.GrpcAddress.ToString().TrimEnd('/')))]);
        var actual = await RunAsync(debtor.Engine, prompt, maxTokens);

        Assert.Equal(FinishReason.Length, actual.Last.Finish);
        Assert.Equal(expected.Tokens, actual.Tokens);
        Assert.Equal(expected.Logits.Count, actual.Logits.Count);
        float worst = 0;
        for (int t = 0; t < expected.Logits.Count; t++)
            for (int v = 0; v < expected.Logits[t].Length; v++)
                worst = Math.Max(worst, Math.Abs(expected.Logits[t][v] - actual.Logits[t][v]));
        output.WriteLine($"sliding window {TestModel.SlidingWindow} over two creditors: worst logit difference {worst:E2}");
        Assert.True(worst <= 1e-4f, $"logits differ by up to {worst}");
        foreach (var lender in new[] { first, second })
        {
            Assert.True(lender.Services.GetRequiredService<EngineHost>().Lender!.AttendCalls > 0);
            await Eventually(() => lender.Services.GetRequiredService<EngineHost>().Lender!.LentBlocks == 0, "lent blocks returned");
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task A_sequence_too_long_for_any_worker_matches_one_big_worker(int creditors)
    {
        // 1 creditor: 342 tokens, 118 of them remote; 2 creditors: 532 tokens, 308 remote (more than one can lend).
        int promptLength = creditors == 1 ? 330 : 520;
        const int maxTokens = 12;
        var prompt = TestModel.Prompt(promptLength, seed: 41 + creditors);

        await using var reference = await StartAsync("--kv-tokens", "4096");
        var expected = await RunAsync(reference.Engine, prompt, maxTokens);

        var lenders = new List<InProcessWorker>();
        for (int i = 0; i < creditors; i++) lenders.Add(await StartAsync(Small));
        try
        {
            await using var debtor = await StartAsync([.. Small, "--peers", string.Join(',', lenders.Select(l => l.GrpcAddress.ToString().TrimEnd('/')))]);
            var actual = await RunAsync(debtor.Engine, prompt, maxTokens);

            Assert.Equal(FinishReason.Length, actual.Last.Finish);
            Assert.Equal(expected.Tokens, actual.Tokens);
            Assert.Equal(expected.Logits.Count, actual.Logits.Count);
            float worst = 0;
            for (int t = 0; t < expected.Logits.Count; t++)
                for (int v = 0; v < expected.Logits[t].Length; v++)
                    worst = Math.Max(worst, Math.Abs(expected.Logits[t][v] - actual.Logits[t][v]));
            Assert.True(worst <= 1e-4f, $"logits differ by up to {worst}");
            // Every creditor took part, and every lent block came back once the sequence ended.
            foreach (var lender in lenders)
                await Eventually(() => lender.Services.GetRequiredService<EngineHost>().Lender!.LentBlocks == 0, "lent blocks returned");
            Assert.Equal(0, debtor.Engine.GetDistAttentionStats().BorrowingSequences);
            Assert.True(debtor.Engine.GetDistAttentionStats().RemoteAttentionTime > TimeSpan.Zero);
        }
        finally
        {
            foreach (var l in lenders) await l.DisposeAsync();
        }
    }

    /// <summary>
    /// A step that samples its local rows on the device (as on a GPU; forced here on cpu) and also carries a
    /// DistAttention sequence, whose row is sampled on the host from the logits its peers' partials gave: each row
    /// gets its own token (the remote row's logits follow the device-sampled rows), and both sequences match one big
    /// worker.
    /// </summary>
    [Fact]
    public async Task Device_sampled_rows_and_a_remote_sequence_in_one_step_each_get_their_own_token()
    {
        const int maxTokens = 12;
        var longPrompt = TestModel.Prompt(330, seed: 51);
        var shortPrompt = TestModel.Prompt(20, seed: 52);
        async Task<List<int>> ShortAsync(LlmEngine engine)
        {
            var tokens = new List<int>();
            await foreach (var chunk in engine.GenerateAsync(new GenerationRequest(shortPrompt, Greedy(maxTokens))))
            {
                Assert.Null(chunk.Error);
                tokens.AddRange(chunk.TokenIds);
            }
            return tokens;
        }

        await using var reference = await StartAsync("--kv-tokens", "4096");
        var expectedLong = await RunAsync(reference.Engine, longPrompt, 3 * maxTokens);
        var expectedShort = await ShortAsync(reference.Engine);

        await using var lender = await StartAsync(Small);
        await using var debtor = await StartAsync([.. Small, "--peers", lender.GrpcAddress.ToString().TrimEnd('/')]);
        debtor.Engine.SampleOnDevice = true;
        // The short request starts once the long one decodes, so their decode steps coincide.
        Task<List<int>>? local = null;
        var remote = RunAsync(debtor.Engine, longPrompt, 3 * maxTokens, chunk => local ??= chunk.TokenIds.Count > 0 ? ShortAsync(debtor.Engine) : null);
        await remote;
        Assert.NotNull(local);

        Assert.Equal(FinishReason.Length, (await remote).Last.Finish);
        Assert.Equal(expectedLong.Tokens, (await remote).Tokens);
        Assert.Equal(expectedShort, await local);
        Assert.True(debtor.Engine.GetDistAttentionStats().RemoteAttentionTime > TimeSpan.Zero);
    }

    /// <summary>
    /// Logits of a 16-bit sequence split across workers against one big worker of the same dtype: attention
    /// there runs in float32 over the stored bfloat16/float16 K/V and the partials merge exactly, where the big
    /// worker's SDPA works in the 16-bit dtype; the difference is the rounding of the attention output
    /// (measured worst: bfloat16 0.02, float16 0.003). Against one big float32 worker, on the steps up to the
    /// first token the two chose differently, the bound is that of the 16-bit compute itself (the engine's
    /// NumericsTests: bfloat16 0.1, float16 0.02).
    /// </summary>
    [Theory]
    [InlineData("bfloat16", 0.05f, 0.1f)]
    [InlineData("float16", 0.01f, 0.02f)]
    public async Task A_16_bit_sequence_too_long_for_any_worker_matches_one_big_worker_of_its_dtype(string dtype, float tolerance, float float32Tolerance)
    {
        // The shipped configuration: bfloat16 compute with DistAttention (and the KV tier) on every worker.
        string[] sixteen = ["--dtype", dtype, "--kv-tier", "host", "--kv-host-memory", "16MB"];
        const int maxTokens = 12;
        var prompt = TestModel.Prompt(330, seed: 42);

        await using var reference = await StartAsync([.. sixteen, "--kv-tokens", "4096"]);
        var expected = await RunAsync(reference.Engine, prompt, maxTokens);

        await using var lender = await StartAsync([.. sixteen, .. Small]);
        Assert.Equal(dtype, lender.Engine.Fingerprint.ComputeDtype);
        Assert.NotNull(lender.Engine.KvTiers);
        await using var debtor = await StartAsync([.. sixteen, .. Small, "--peers", lender.GrpcAddress.ToString().TrimEnd('/')]);
        var actual = await RunAsync(debtor.Engine, prompt, maxTokens);

        Assert.Equal(FinishReason.Length, actual.Last.Finish);
        Assert.Equal(expected.Tokens, actual.Tokens);
        Assert.Equal(expected.Logits.Count, actual.Logits.Count);
        float worst = 0;
        for (int t = 0; t < expected.Logits.Count; t++)
            for (int v = 0; v < expected.Logits[t].Length; v++)
                worst = Math.Max(worst, Math.Abs(expected.Logits[t][v] - actual.Logits[t][v]));
        output.WriteLine($"{dtype} DistAttention vs one worker: worst logit difference {worst:E2} (tolerance {tolerance})");
        Assert.True(worst <= tolerance, $"logits differ by up to {worst}");

        await using (var float32 = await StartAsync("--dtype", "float32", "--kv-tokens", "4096"))
        {
            var exact = await RunAsync(float32.Engine, prompt, maxTokens);
            float worstToFloat32 = 0;
            int steps = 0;
            for (int t = 0; t < exact.Logits.Count; t++)
            {
                for (int v = 0; v < exact.Logits[t].Length; v++)
                    worstToFloat32 = Math.Max(worstToFloat32, Math.Abs(exact.Logits[t][v] - actual.Logits[t][v]));
                steps++;
                if (exact.Tokens[t] != actual.Tokens[t]) break;
            }
            output.WriteLine($"{dtype} DistAttention vs one float32 worker: worst logit difference {worstToFloat32:E2} over {steps} of {exact.Logits.Count} steps (tolerance {float32Tolerance})");
            Assert.True(worstToFloat32 <= float32Tolerance, $"logits differ from float32 by up to {worstToFloat32}");
        }
        // The creditor really served attention, and every lent block came back.
        Assert.True(lender.Services.GetRequiredService<EngineHost>().Lender!.AttendCalls > 0);
        await Eventually(() => lender.Services.GetRequiredService<EngineHost>().Lender!.LentBlocks == 0, "lent blocks returned");
        Assert.True(debtor.Engine.GetDistAttentionStats().RemoteAttentionTime > TimeSpan.Zero);
    }

    [Fact]
    public async Task Without_peers_that_can_hold_it_a_long_prompt_is_refused_at_once_with_the_sizes()
    {
        await using var alone = await StartAsync("--kv-tokens", "256");
        var prompt = TestModel.Prompt(600, seed: 3);
        var refused = Assert.Throws<EngineRequestException>(() => alone.Engine.GenerateAsync(new GenerationRequest(prompt, Greedy(4))));
        Assert.Contains("holds 256", refused.Message, StringComparison.Ordinal);
        Assert.Contains("DistAttention", refused.Message, StringComparison.Ordinal);

        await using var lender = await StartAsync(Small);
        await using var debtor = await StartAsync([.. Small, "--peers", lender.GrpcAddress.ToString().TrimEnd('/')]);
        // 2,000 tokens: 224 here, the creditor can lend 224: far from enough.
        var tooLong = TestModel.Prompt(2000, seed: 4);
        var e = await Assert.ThrowsAsync<EngineRequestException>(async () => await RunAsync(debtor.Engine, tooLong, 4));
        Assert.Contains("needs 2004 tokens", e.Message, StringComparison.Ordinal);
        Assert.Contains("can lend 224", e.Message, StringComparison.Ordinal);
        await Eventually(() => lender.Services.GetRequiredService<EngineHost>().Lender!.LentBlocks == 0, "the partial reservation handed back");
    }

    /// <summary>
    /// A debtor with two creditors (the first a real process) and a spare peer it does not need at first
    /// (at most two creditors per sequence): 536 positions, 224 local, [224, 448) on the process, [448, 536) on
    /// the second creditor. The process is killed (or frozen: its layer times out) mid-decode; the debtor
    /// reserves [224, 448) on the spare, recomputes those 224 positions there and retries the step, and the
    /// tokens and logits equal one big worker's. A frozen creditor, thawed, no longer lends the lost blocks.
    /// </summary>
    [Theory]
    [InlineData("killed")]
    [InlineData("frozen")]
    public async Task A_creditor_lost_mid_decode_is_replanned_onto_a_spare_peer_and_the_sequence_matches_one_big_worker(string fault)
    {
        const int maxTokens = 16;
        var prompt = TestModel.Prompt(520, seed: 47);
        await using var reference = await StartAsync("--kv-tokens", "4096");
        var expected = await RunAsync(reference.Engine, prompt, maxTokens);

        await using var doomed = await WorkerProcess.StartAsync(["--model", TestModel.Dir, "--port", "0", "--http-port", "0", "--threads", "1", .. Small]);
        await using var survivor = await StartAsync(Small);
        await using var spare = await StartAsync(Small);
        // The planner ranks peers by what they can lend (224 tokens each here), ties in this order.
        string peers = string.Join(',', new[] { doomed.GrpcAddress, survivor.GrpcAddress, spare.GrpcAddress }.Select(a => a.ToString().TrimEnd('/')));
        await using var debtor = await StartAsync([.. Small, "--peers", peers, "--dist-max-peers", "2"]);
        debtor.Engine.BeforeStep = () => Thread.Sleep(20);
        var spareLender = spare.Services.GetRequiredService<EngineHost>().Lender!;
        var survivorLender = survivor.Services.GetRequiredService<EngineHost>().Lender!;
        int generated = 0;
        int spareBlocksBeforeFault = -1;
        bool thawed = false;
        double doomedBlocksBeforeFault = -1;
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        try
        {
            var actual = await RunAsync(debtor.Engine, prompt, maxTokens, onChunk: chunk =>
            {
                generated += chunk.TokenIds.Count;
                if (generated != 2 || chunk.TokenIds.Count == 0) return;
                spareBlocksBeforeFault = spareLender.LentBlocks;
                doomedBlocksBeforeFault = LentBlocksOf(doomed);
                if (fault == "killed") doomed.Kill();
                else doomed.Freeze();
            }, timeout.Token);

            Assert.True(actual.Last.Finish == FinishReason.Length, $"finished {actual.Last.Finish}: {actual.Last.Error}");
            Assert.Equal(expected.Tokens, actual.Tokens);
            Assert.Equal(expected.Logits.Count, actual.Logits.Count);
            float worst = 0;
            for (int t = 0; t < expected.Logits.Count; t++)
                for (int v = 0; v < expected.Logits[t].Length; v++)
                    worst = Math.Max(worst, Math.Abs(expected.Logits[t][v] - actual.Logits[t][v]));
            output.WriteLine($"creditor {fault} mid-decode, re-planned onto the spare: worst logit difference {worst:E2}");
            Assert.True(worst <= 1e-4f, $"logits differ by up to {worst}");

            // The spare held nothing before the fault, then the lost segment; the debtor counted one re-plan of 224 positions.
            Assert.Equal(0, spareBlocksBeforeFault);
            Assert.Equal(14, doomedBlocksBeforeFault);
            Assert.True(spareLender.AttendCalls > 0, "the spare served the rest of the sequence");
            var stats = debtor.Engine.GetDistAttentionStats();
            Assert.Equal(1, stats.Replans);
            Assert.Equal(224, stats.RecomputedTokens);
            // Nothing stays borrowed on the debtor's side, and the spare's and the survivor's lent blocks come back.
            Assert.Equal(0, stats.BorrowingSequences);
            Assert.Equal(0, stats.BorrowedBlocks);
            await Eventually(() => spareLender.LentBlocks == 0 && spareLender.Reservations == 0, "the spare's lent blocks returned");
            await Eventually(() => survivorLender.LentBlocks == 0 && survivorLender.Reservations == 0, "the survivor's lent blocks returned");
            Assert.True(debtor.Engine.Healthy);

            if (fault == "frozen")
            {
                // Thawed, the lost creditor finds its reservation handed back or expired: it lends nothing any more.
                doomed.Thaw();
                thawed = true;
                await Eventually(() => LentBlocksOf(doomed) == 0, "the frozen creditor's reservation returned after it was thawed", timeoutMs: 40_000);
            }
        }
        finally
        {
            if (fault == "frozen" && !thawed) doomed.Thaw();
        }
    }

    /// <summary>
    /// The fallback: the killed creditor held [224, 380) and the only other peer can lend 48 tokens, so the
    /// positions cannot be re-planned: the sequence ends with an error naming the dead peer and what the other
    /// could lend (the router then migrates the request), and the debtor keeps serving.
    /// </summary>
    [Fact]
    public async Task A_creditor_killed_mid_decode_with_no_peer_to_take_its_positions_ends_the_sequence_with_an_error_and_the_debtor_keeps_serving()
    {
        await using var lender = await WorkerProcess.StartAsync(["--model", TestModel.Dir, "--port", "0", "--http-port", "0", "--threads", "1", .. Small]);
        // Keeps 13 of its 16 blocks: lends 48 tokens, too few for the 156 the dead creditor held.
        await using var small = await StartAsync([.. Small, "--lend-reserve-fraction", "0.8"]);
        string deadPeer = lender.GrpcAddress.ToString().TrimEnd('/');
        await using var debtor = await StartAsync([.. Small, "--peers", deadPeer + "," + small.GrpcAddress.ToString().TrimEnd('/')]);
        debtor.Engine.BeforeStep = () => Thread.Sleep(20);
        var prompt = TestModel.Prompt(330, seed: 9);
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(2));
        var chunks = new List<GenerationChunk>();
        await foreach (var chunk in debtor.Engine.GenerateAsync(new GenerationRequest(prompt, Greedy(50)), timeout.Token))
        {
            chunks.Add(chunk);
            if (chunks.Count(c => c.TokenIds.Count > 0) == 2 && chunk.TokenIds.Count > 0) lender.Kill();
        }
        var last = chunks[^1];
        Assert.Equal(FinishReason.Error, last.Finish);
        output.WriteLine(last.Error);
        Assert.Contains($"KV peer {deadPeer}", last.Error, StringComparison.Ordinal);
        Assert.Contains("no other DistAttention peer can hold positions 224..379", last.Error, StringComparison.Ordinal);
        Assert.Contains("can lend 48", last.Error, StringComparison.Ordinal);
        Assert.True(chunks.Sum(c => c.TokenIds.Count) < 50);
        Assert.True(debtor.Engine.Healthy, "one sequence failed, not the engine");
        Assert.Equal(0, debtor.Engine.GetDistAttentionStats().Replans);
        // Its local blocks are freed (the stats snapshot follows at the end of the engine's step), nothing stays borrowed.
        await Eventually(() => debtor.Engine.GetStats().KvBlocksUsed == 0, "the failed sequence's local blocks freed");
        Assert.Equal(0, debtor.Engine.GetDistAttentionStats().BorrowedBlocks);
        Assert.Equal(0, small.Services.GetRequiredService<EngineHost>().Lender!.LentBlocks);

        debtor.Engine.BeforeStep = null;
        var local = await RunAsync(debtor.Engine, TestModel.Prompt(50, seed: 10), 4);
        Assert.Equal(FinishReason.Length, local.Last.Finish);
    }

    [Fact]
    public async Task A_reservation_whose_debtor_went_silent_expires_and_a_creditor_never_lends_its_reserve()
    {
        await using var lender = await StartAsync([.. Small, "--dist-lease-ms", "300"]);
        using var channel = GrpcChannel.ForAddress(lender.GrpcAddress);
        var client = new KvPeer.KvPeerClient(channel);
        string fingerprint = lender.Engine.Fingerprint.Id;

        var probe = await client.ReserveAsync(new ReserveRequest { Tokens = 0, LeaseMs = 300, Fingerprint = fingerprint });
        Assert.Equal(224, probe.LendableTokens);
        var tooMuch = await client.ReserveAsync(new ReserveRequest { Tokens = 240, LeaseMs = 300, Fingerprint = fingerprint });
        Assert.False(tooMuch.Granted);
        Assert.Contains("can lend 224", tooMuch.Reason, StringComparison.Ordinal);
        var foreign = await client.ReserveAsync(new ReserveRequest { Tokens = 16, LeaseMs = 300, Fingerprint = "another-model" });
        Assert.False(foreign.Granted);

        var granted = await client.ReserveAsync(new ReserveRequest { SequenceId = "s", StartPosition = 192, Tokens = 100, LeaseMs = 300, Fingerprint = fingerprint });
        Assert.True(granted.Granted);
        var host = lender.Services.GetRequiredService<EngineHost>();
        Assert.Equal(7, host.Lender!.LentBlocks);
        // Nobody renews: the lease runs out and the blocks go back.
        await Eventually(() => host.Lender.LentBlocks == 0, "expired reservation returned");
        var renewed = await client.RenewAsync(new RenewRequest { ReservationId = granted.ReservationId, LeaseMs = 300 });
        Assert.False(renewed.Known);
    }

    /// <summary>A worker process's lent blocks, as its /metrics reports them (NaN when absent).</summary>
    private static double LentBlocksOf(WorkerProcess worker)
    {
        using var http = new HttpClient { BaseAddress = worker.HttpAddress };
        string text = http.GetStringAsync(new Uri("/metrics", UriKind.Relative)).GetAwaiter().GetResult();
        string? line = text.Split('\n').FirstOrDefault(l => l.StartsWith("platform_dist_attention_lent_blocks{", StringComparison.Ordinal));
        return line is null ? double.NaN : double.Parse(line[(line.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture);
    }

    private static async Task Eventually(Func<bool> condition, string what, int timeoutMs = 20_000)
    {
        var deadline = DateTime.UtcNow.AddMilliseconds(timeoutMs);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"timed out waiting for: {what}");
            await Task.Delay(20);
        }
    }
}
