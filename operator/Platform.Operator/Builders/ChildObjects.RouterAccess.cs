// The router's identity: a ServiceAccount and a Role that may only list and watch
// EndpointSlices (its worker discovery), bound together.
using k8s.Models;
using Platform.Operator.Api;

namespace Platform.Operator.Builders;

public static partial class ChildObjects
{
    public static V1ServiceAccount BuildRouterAccount(LongContextModel model) => new()
    {
        ApiVersion = "v1",
        Kind = "ServiceAccount",
        Metadata = Meta(model, Names.RouterAccount(model.Metadata.Name), Names.RouterComponent),
    };

    /// <summary>Least privilege for discovery: list and watch EndpointSlices in the model's namespace, nothing else.</summary>
    public static V1Role BuildRouterRole(LongContextModel model) => new()
    {
        ApiVersion = "rbac.authorization.k8s.io/v1",
        Kind = "Role",
        Metadata = Meta(model, Names.RouterAccount(model.Metadata.Name), Names.RouterComponent),
        Rules = [new V1PolicyRule { ApiGroups = ["discovery.k8s.io"], Resources = ["endpointslices"], Verbs = ["list", "watch"] }],
    };

    public static V1RoleBinding BuildRouterRoleBinding(LongContextModel model)
    {
        var name = model.Metadata.Name;
        return new V1RoleBinding
        {
            ApiVersion = "rbac.authorization.k8s.io/v1",
            Kind = "RoleBinding",
            Metadata = Meta(model, Names.RouterAccount(name), Names.RouterComponent),
            RoleRef = new V1RoleRef { ApiGroup = "rbac.authorization.k8s.io", Kind = "Role", Name = Names.RouterAccount(name) },
            Subjects = [new Rbacv1Subject { Kind = "ServiceAccount", Name = Names.RouterAccount(name), NamespaceProperty = model.Metadata.NamespaceProperty }],
        };
    }
}
