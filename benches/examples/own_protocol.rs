//! Benchmarks a protocol of its own — as a user's crate would — with
//! ferry-bench's library: an order service declared with
//! `ferry_transport::protocol!`, its handler answering in a second process,
//! measured closed-loop and open-loop by ferry-bench's loops.
//!
//! ```text
//! cargo run --release -p ferry-bench --example own_protocol -- --iters 100000
//! cargo run --release -p ferry-bench --example own_protocol -- --rate 10k,50k,100k --plot orders.svg --json orders.json
//! ```

use ferry_bench::custom::{self, Workload};
use ferry_transport::{Connection, ConnectionConfig, Context, Receiver, Remote, WaitStrategy};
use std::cell::Cell;
use std::process::ExitCode;

ferry_transport::protocol! {
    /// An order book.
    pub receiver Orders handled_by OrdersHandler {
        /// Places an order; the reply says whether the book took it.
        fn place => Place { id: u64, symbol: String, price_cents: u64, quantity: u32, tags: Vec<u16> }
            -> Placed { id: u64, accepted: bool, open_orders: u64 };
    }
}

/// The user's handler: accepts orders with a quantity, counts them.
#[derive(Default)]
struct Book {
    open: Cell<u64>,
}

impl OrdersHandler for Book {
    fn place(&self, _: &mut Context, order: &ArchivedPlace) -> Placed {
        let accepted = order.quantity.to_native() > 0 && !order.symbol.is_empty();
        if accepted {
            self.open.set(self.open.get() + 1);
        }
        Placed {
            id: order.id.to_native(),
            accepted,
            open_orders: self.open.get(),
        }
    }
}

/// What the benchmark sends: one order per round trip.
struct PlaceOrders;

const BOOK: Remote<Orders> = Remote::new(1);

impl Workload for PlaceOrders {
    type Request = Place;
    const NAME: &'static str = "place-order";

    fn config(&self) -> ConnectionConfig {
        ConnectionConfig::default()
            .schema(ferry_transport::schema_of(&[<Orders as Receiver>::SCHEMA]))
            .wait(WaitStrategy::Spin)
    }

    fn destination(&self) -> Remote<Orders> {
        BOOK
    }

    fn register(&self, connection: &mut Connection) {
        connection.register(BOOK.destination(), Orders::handler(Book::default()));
    }

    fn request(&mut self, seq: u64) -> Place {
        Place {
            id: seq,
            symbol: "FERRY".into(),
            price_cents: 10_000 + seq % 100,
            quantity: 1 + (seq % 10) as u32,
            tags: vec![1, 2, 3],
        }
    }

    fn check(seq: u64, reply: &ArchivedPlaced) -> bool {
        reply.id.to_native() == seq && reply.accepted
    }

    fn size(&self) -> usize {
        96
    }
}

fn main() -> ExitCode {
    custom::main(|| PlaceOrders)
}
