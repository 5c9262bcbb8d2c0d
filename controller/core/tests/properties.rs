
/// Plans `first`, then `first` and `second` one change later, and returns the incremental and
/// the full plan of the second step.
fn arriving(first: &str, second: &str, cap: Capacity) -> (LbState, LbState) {
    let node = sluice_core::NodeContext { node_ips: vec!["172.30.0.11".parse().unwrap()], ..Default::default() };
    let (s1, e1, _) = sluice_core::manifest::parse_str(first);
    let (s2, e2, _) = sluice_core::manifest::parse_str(&format!("{first}\n---\n{second}"));
    let mut planner = Planner::new(Ids::default());
    planner.plan(Changed::All, &sluice_core::Listed::new(&s1, &e1), &node, cap);
    let ids = planner.ids();
    let group = sluice_core::incremental::service_group(s2.last().unwrap());
    planner.plan(Changed::Groups([group].into()), &sluice_core::Listed::new(&s2, &e2), &node, cap);
    (planner.desired().clone(), plan(&s2, &e2, &node, &ids, cap).desired)
}

/// Found by `planning_one_change_at_a_time_equals_a_full_plan`: with room for one Service, the
/// one that arrived first kept it, where a full plan (and every other node) gives it to the
/// first by name.
#[test]
fn a_full_map_goes_to_the_same_service_whatever_order_they_arrived_in() {
    let svc = |ns: &str, ip: &str| format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s0, namespace: {ns}}}\nspec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}\n");
    let (incremental, full) = arriving(&svc("b", "10.96.0.2"), &svc("a", "10.96.0.1"), Capacity { services: 1, ..Capacity::default() });
    assert_eq!(incremental, full);
    assert_eq!(arbitrary::frontends(&full), vec![("10.96.0.1".parse().unwrap(), 80, 6, 0)], "a/s0 comes first");
}

/// Found by `planning_one_change_at_a_time_equals_a_full_plan`: a TCP and a UDP Service on one
/// address and port (a shared LoadBalancer IP) share its rev-NAT id, whose name was whichever
/// was laid out last.
#[test]
fn a_shared_rev_nat_id_is_named_the_same_whatever_order_its_services_arrived_in() {
    let svc = |name: &str, ip: &str, proto: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: a}}\nspec: {{type: LoadBalancer, clusterIP: {ip}, ports: [{{port: 53, protocol: {proto}, nodePort: 30053}}]}}\nstatus: {{loadBalancer: {{ingress: [{{ip: 192.0.2.10}}]}}}}\n")
    };
    let (incremental, full) = arriving(&svc("dns-udp", "10.96.0.2", "UDP"), &svc("dns-tcp", "10.96.0.1", "TCP"), Capacity::default());
    assert_eq!(incremental, full);
}
